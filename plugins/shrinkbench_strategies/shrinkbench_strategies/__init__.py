"""ShrinkBench plugin: Pruning strategies for ShrinkBench: magnitude, gradient, activation, random, structured and modern baselines."""

__version__ = "0.1.0"
