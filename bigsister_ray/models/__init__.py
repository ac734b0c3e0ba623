"""Models: the registry of backbones (I3D, torchvision video models, MobileNetV2-TSM, Tiny3D), audited weight
loading, self-describing checkpoints and FLOP counting.

Build by name with :func:`build_model`; feed it ``clip.to_model_input(clips, get_model_spec(name).norm, spec.input)``.
Save with :func:`save_checkpoint`, and serve with :func:`load_checkpoint` + :func:`predict_proba`.
"""

from bigsister_ray.models.checkpoint import (
    CHECKPOINT_FILENAME,
    CheckpointMeta,
    LoadedCheckpoint,
    load_checkpoint,
    predict_proba,
    read_checkpoint_meta,
    resolve_checkpoint_path,
    save_checkpoint,
    update_checkpoint_meta,
)
from bigsister_ray.models.flops import mfu, model_flops
from bigsister_ray.models.i3d import InceptionI3d, i3d
from bigsister_ray.models.mobilenet_tsm import MobileNetTSM, mobilenet_tsm
from bigsister_ray.models.registry import (
    ModelSpec,
    build_model,
    check_clip,
    get_model_spec,
    list_models,
    register_model,
)
from bigsister_ray.models.tiny3d import Tiny3D, tiny3d
from bigsister_ray.models.weights import LoadReport, load_weights, read_state_dict

__all__ = [
    "CHECKPOINT_FILENAME",
    "CheckpointMeta",
    "InceptionI3d",
    "LoadReport",
    "LoadedCheckpoint",
    "MobileNetTSM",
    "ModelSpec",
    "Tiny3D",
    "build_model",
    "check_clip",
    "get_model_spec",
    "i3d",
    "list_models",
    "load_checkpoint",
    "load_weights",
    "mfu",
    "mobilenet_tsm",
    "model_flops",
    "predict_proba",
    "read_checkpoint_meta",
    "read_state_dict",
    "register_model",
    "resolve_checkpoint_path",
    "save_checkpoint",
    "tiny3d",
    "update_checkpoint_meta",
]
