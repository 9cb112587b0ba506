"""ShrinkBench plugin: pruning strategies (magnitude, gradient, activation, random, channel...)."""

__version__ = "0.1.0"
