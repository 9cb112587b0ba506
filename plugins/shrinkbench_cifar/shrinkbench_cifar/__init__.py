"""ShrinkBench plugin: CIFAR-10/100 data and CIFAR ResNets/VGG for ShrinkBench."""

__version__ = "0.1.0"
