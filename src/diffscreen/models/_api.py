"""Model registry and model files.

A model file is a ``.safetensors`` file: the weights, plus a JSON metadata
record under the key ``"diffscreen"`` holding the architecture and its
arguments, the preprocessing recipe, the class names, a description of the
training data, the seed and the metrics.  Loading never runs code (no
pickle): :func:`load_model` reads tensors and JSON only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

from diffscreen.errors import ConfigError, ModelFileError

__all__ = [
    "register_model",
    "get_model",
    "list_models",
    "ModelBundle",
    "save_model",
    "load_model",
    "default_model_path",
    "resolve_model_path",
    "BUNDLED_MODELS",
    "FORMAT_VERSION",
    "check_record",
]

FORMAT_VERSION = 1
_REGISTRY: dict[str, Callable] = {}


def register_model(name: str):
    """Decorator adding a builder function to the registry under ``name``."""

    def wrap(fn):
        _REGISTRY[name] = fn
        return fn

    return wrap


def _load_builtin():
    # Importing the architecture modules registers their builders.
    from diffscreen.models import ke2018  # noqa: F401
    from diffscreen.models import zimmermann2019  # noqa: F401
    from diffscreen.models import alexnet  # noqa: F401
    from diffscreen.models import rwd1d  # noqa: F401


def list_models() -> list[str]:
    """Names of the registered architectures."""
    _load_builtin()
    return sorted(_REGISTRY)


def get_model(name: str, **kwargs):
    """Build architecture ``name`` with keyword arguments ``kwargs``.

    Raises
    ------
    ConfigError
        If ``name`` is not registered.
    """
    _load_builtin()
    if name not in _REGISTRY:
        raise ConfigError(f"no model architecture named {name!r}; known: {', '.join(list_models())}")
    return _REGISTRY[name](**kwargs)


@dataclass
class ModelBundle:
    """A model with everything needed to use it.

    Attributes
    ----------
    model : torch.nn.Module
        In eval mode.
    arch : str
        Registry name of the architecture.
    arch_kwargs : dict
        Builder arguments.
    preprocess : PreprocessConfig
        The recipe the model was trained with.
    class_names : tuple of str
        Names of the outputs, in order.
    meta : dict
        The full metadata record (training data, seed, metrics, ...).
    path : str or None
        File it was loaded from.
    """

    model: object
    arch: str
    arch_kwargs: dict
    preprocess: object
    class_names: tuple
    meta: dict = field(default_factory=dict)
    path: str | None = None


#: The bundled models (trained on simulated runs of every simulator preset; docs/default_model.md):
#: ``default``, the Ke CNN at 720 × 720 (Ke's full field at Ke's pixel), and ``fast``, the same CNN
#: at 360 × 360 over the same field at twice the pixel (about 2.5 × faster, a little less accurate).
BUNDLED_MODELS = {"default": "ke2018_default.safetensors", "fast": "ke2018_fast.safetensors",
                  "cdi": "zimmermann2019_cdi.safetensors"}


def default_model_path(name: str = "default") -> Path:
    """Path of a bundled model file (``name``: a key of :data:`BUNDLED_MODELS`).

    Raises
    ------
    ConfigError
        Unknown name.
    """
    from diffscreen.errors import ConfigError

    if name not in BUNDLED_MODELS:
        raise ConfigError(f"no bundled model named {name!r}; use one of {', '.join(BUNDLED_MODELS)}")
    return Path(str(resources.files("diffscreen") / "data" / BUNDLED_MODELS[name]))


def resolve_model_path(path=None) -> Path:
    """The model file that ``path`` names.

    ``None`` is the bundled default model; a name of :data:`BUNDLED_MODELS`
    (``"default"``, ``"fast"``, ``"cdi"``) that is not an existing file is that bundled
    model; anything else is a file path (checked when it is read).

    Parameters
    ----------
    path : str, Path or None

    Returns
    -------
    Path
    """
    if path is None:
        return default_model_path()
    p = Path(path)
    if str(path) in BUNDLED_MODELS and not p.exists():
        return default_model_path(str(path))
    return p


def save_model(path, model, *, arch: str, arch_kwargs: dict, preprocess, class_names, **meta) -> Path:
    """Write ``model`` and its metadata to a ``.safetensors`` file, atomically.

    Parameters
    ----------
    path : str or Path
    model : torch.nn.Module
    arch : str
        Registry name.
    arch_kwargs : dict
        Builder arguments (JSON-serialisable).
    preprocess : PreprocessConfig
    class_names : sequence of str
    **meta
        Further JSON-serialisable records, e.g. ``training=...``,
        ``metrics=...``, ``seed=...``.

    Returns
    -------
    Path
    """
    from safetensors.torch import save_file

    from diffscreen.io.atomic import temporary_path

    record = {
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "arch_kwargs": arch_kwargs,
        "preprocess": preprocess.to_dict(),
        "class_names": list(class_names),
        **meta,
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with temporary_path(path) as tmp:
        save_file(state, str(tmp), metadata={"diffscreen": json.dumps(record)})
    return Path(path)


def read_model_metadata(path) -> dict:
    """The metadata record of a model file, without loading weights.

    Raises
    ------
    ModelFileError
        Missing file, not a safetensors file, or no diffscreen record.
    """
    from safetensors import safe_open

    p = resolve_model_path(path)
    if not p.is_file():
        raise ModelFileError("model file not found", path=p)
    try:
        with safe_open(str(p), framework="pt") as f:
            md = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types
        raise ModelFileError(f"not a readable safetensors model file ({exc})", path=p) from None
    if "diffscreen" not in md:
        raise ModelFileError("safetensors file has no diffscreen metadata record", path=p)
    try:
        rec = json.loads(md["diffscreen"])
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"corrupt metadata record ({exc})", path=p) from None
    check_record(rec, p)
    return rec


#: Bounds on what a model record may ask for, so that no file can make loading allocate
#: more than a few hundred MB: network input side (px), number of outputs, input channels,
#: any other integer builder argument, and the preprocessing's crop sizes (px).
LIMITS = {"input_size": (1, 4096), "num_classes": (1, 1024), "in_chans": (1, 64), "int": (0, 4096),
          "out_size": (1, 4096), "fallback_size": (1, 16384)}


def _check_bounds(record: dict, what: str, p) -> None:
    for k, v in record.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if not math.isfinite(v):
            raise ModelFileError(f"{what} {k} is {v}; it must be finite", path=p)
        lo, hi = LIMITS.get(k, LIMITS["int"] if isinstance(v, int) else (-math.inf, math.inf))
        if not lo <= v <= hi:
            raise ModelFileError(f"{what} {k} = {v} is outside {lo}..{hi}; refused (not a model diffscreen made?)",
                                 path=p)


def check_record(rec, path=None) -> None:
    """Refuse a model metadata record that diffscreen cannot or must not use.

    Checks the format version, the types of the fields, the class names
    (at least one, unique, non-empty strings) and the bounds of every number
    in ``arch_kwargs`` and ``preprocess`` (:data:`LIMITS`), before any
    network is built: an absurd ``input_size`` would otherwise allocate
    gigabytes.

    Parameters
    ----------
    rec : object
        The decoded JSON record (``"diffscreen"`` metadata key).
    path : str or Path, optional
        The model file, for the error message.

    Raises
    ------
    ModelFileError
        What is wrong, one line.
    """
    if not isinstance(rec, dict):
        raise ModelFileError(f"the metadata record is a JSON {type(rec).__name__}, not an object", path=path)
    version = rec.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(f"format_version {version!r} is not one this diffscreen reads ({FORMAT_VERSION}); "
                             "a newer diffscreen may read it", path=path)
    for key, kind in (("arch", str), ("arch_kwargs", dict), ("preprocess", dict), ("class_names", list)):
        if not isinstance(rec.get(key, {} if key == "arch_kwargs" else None), kind):
            raise ModelFileError(f"metadata field {key!r} is missing or not a {kind.__name__}", path=path)
    names = rec["class_names"]
    if not names or not all(isinstance(c, str) and c for c in names) or len(set(names)) != len(names):
        raise ModelFileError(f"class_names {names!r} must be unique non-empty strings", path=path)
    kwargs = rec.get("arch_kwargs", {})
    _check_bounds(kwargs, "arch_kwargs", path)
    _check_bounds(rec["preprocess"], "preprocess", path)
    if "num_classes" in kwargs and kwargs["num_classes"] != len(names):
        raise ModelFileError(f"num_classes {kwargs['num_classes']} differs from the {len(names)} class_names",
                             path=path)


def _preprocess_from_record(d: dict):
    """The preprocessing recipe of a model file: a CDI recipe (``"kind": "cdi"``) or,
    without a ``kind`` key, the Ke et al. :class:`~diffscreen.preprocess.PreprocessConfig`."""
    if isinstance(d, dict) and d.get("kind") == "cdi":
        from diffscreen.preprocess.cdi import CDIPreprocessConfig

        return CDIPreprocessConfig.from_dict(d)
    from diffscreen.preprocess import PreprocessConfig

    return PreprocessConfig.from_dict(d)


def load_model(path=None) -> ModelBundle:
    """Load a model file (default: the bundled model).

    Parameters
    ----------
    path : str or Path, optional
        A model file, or the name of a bundled model (``"default"``,
        ``"fast"``; see :func:`resolve_model_path`).

    Returns
    -------
    ModelBundle

    Raises
    ------
    ModelFileError
        If the file is missing or corrupt, its record fails
        :func:`check_record`, a weight is NaN or inf, or its weights do not
        fit its declared architecture.
    """
    from safetensors.torch import load_file

    p = resolve_model_path(path)
    rec = read_model_metadata(p)
    try:
        model = get_model(rec["arch"], **rec.get("arch_kwargs", {}))
        pre = _preprocess_from_record(rec["preprocess"])
        class_names = tuple(rec["class_names"])
    except (KeyError, ConfigError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"incomplete or invalid metadata record ({exc})", path=p) from None
    try:
        state = load_file(str(p))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise ModelFileError(f"the weights cannot be read ({exc})", path=p) from None
    bad = [k for k, t in state.items() if t.is_floating_point() and not bool(t.isfinite().all())]
    if bad:
        raise ModelFileError(f"{len(bad)} weight tensors hold NaN or inf (first: {bad[0]}); the file is corrupt", path=p)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ModelFileError(f"weights do not match architecture {rec['arch']!r}: {first}", path=p) from None
    heads = [m for m in model.modules() if hasattr(m, "out_features")]
    if heads and heads[-1].out_features != len(class_names):
        raise ModelFileError(f"the network has {heads[-1].out_features} outputs but the record names "
                             f"{len(class_names)} class_names", path=p)
    model.eval()
    return ModelBundle(model, rec["arch"], rec.get("arch_kwargs", {}), pre, class_names, rec, str(p))
