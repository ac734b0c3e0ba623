"""Datasets: annotation readers, the clip index and group split, the Ray Data pipeline, EDA, synthetic data.

Submodules are imported where used (``bigsister_ray.data.pipeline`` pulls in Ray Data).
"""
