"""grmp-edge: few-shot CLIP image quality assessment (GRMP-IQA) compiled for edge devices."""

__version__ = "0.1.0"
