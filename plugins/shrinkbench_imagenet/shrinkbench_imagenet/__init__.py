"""ShrinkBench plugin: ImageNet and Places365 data, and every torchvision classifier."""

__version__ = "0.1.0"
