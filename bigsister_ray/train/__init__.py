"""Training and evaluation: Ray Train loop, TorchTrainer wiring, metrics, evaluation reports.

Submodules import torch and Ray lazily; import what you need, e.g. ``from bigsister_ray.train.trainer import train``.
"""

__all__: list[str] = []
