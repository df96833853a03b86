"""edgeseg: efficient attention-based semantic segmentation from PyTorch to edge devices."""

__version__ = "0.1.0"
