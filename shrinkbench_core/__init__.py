"""ShrinkBench core: the plugin contract, registry, pruning engine and runner.

Importing this package is cheap: nothing here imports torch until a component
is actually used.
"""

__version__ = "0.1.0"
