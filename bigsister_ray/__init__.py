"""bigsister-ray: CCTV abnormal-behaviour detection on Ray."""

__version__ = "0.1.0"
