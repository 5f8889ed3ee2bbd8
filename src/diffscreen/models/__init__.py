"""Network architectures, one per file, and model files.

Where a frame is classified: a :class:`ModelBundle` from :func:`load_model`
(see :mod:`diffscreen.screen` for the batch loop and the decision rule).
"""

from diffscreen.models._api import (
    ModelBundle,
    default_model_path,
    resolve_model_path,
    BUNDLED_MODELS,
    get_model,
    list_models,
    load_model,
    read_model_metadata,
    register_model,
    save_model,
)
from diffscreen.models.decision import decide, hit_probability
from diffscreen.models.fused import fold_batchnorm, inference_model
from diffscreen.models.ke2018 import KeCNN, ke2018_cnn
from diffscreen.models.rwd1d import RWD1DCNN, rwd1d_cnn

__all__ = [
    "KeCNN",
    "ke2018_cnn",
    "RWD1DCNN",
    "rwd1d_cnn",
    "ModelBundle",
    "default_model_path",
    "resolve_model_path",
    "BUNDLED_MODELS",
    "get_model",
    "list_models",
    "load_model",
    "read_model_metadata",
    "register_model",
    "save_model",
    "decide",
    "hit_probability",
    "fold_batchnorm",
    "inference_model",
]
