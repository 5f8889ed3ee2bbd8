"""Explain the decisions on the frames of files (``diffscreen explain``).

Every registered model type is explained the same way (:class:`ExplainModel`):
the Ke et al. 2018 CNN, the AlexNet of Nawaz et al. 2022 and the row-wise
1-D CNN of Xie et al. 2022 (softmax over hit/maybe/miss or the DiffraNet
classes, input prepared by :class:`~diffscreen.preprocess.Preprocessor`),
and the multi-label CDI ResNet of Zimmermann et al. 2019 (one sigmoid per
label, input prepared by :func:`~diffscreen.preprocess.cdi.prepare_cdi`;
the explained label is the one asked for, else each frame's most probable
label, which is its top positive label when any is set).

For every frame: a PNG of the map over the (preprocessed) frame, drawn as
the source paper draws it, and one HDF5 file with all raw maps::

    OUT/NNNNN_<file>_f<frame>_<method>.png
    OUT/explain_<method>.h5
        /maps           (N, S, S) float32   [inversion: (N, L, S, S), one per block]
        /input          (N, S, S) float32   the preprocessed network input
        /probabilities  (N, C) float32      softmax of the logits (multi-label: one sigmoid per label)
        /target         (N,) int32          class explained
        /file           (N,) str            input spec
        /frame          (N,) int64          0-based frame index
        /mask           (N, S, S) bool      saliency only: pixels beyond 3σ (Ke Fig. 10)
        attributes: method, model, arch, task, outputs ("softmax" or "sigmoid"),
                    class_names (JSON), layer, display, citation
    OUT/errors.csv     file,frame,error for frames that could not be read
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from diffscreen.errors import ConfigError, DiffscreenError

__all__ = ["EXPLAIN_METHODS", "DISPLAY", "ExplainModel", "explain_frames", "resolve_target"]

#: Methods of ``diffscreen explain``: :data:`diffscreen.explain.METHODS` plus inversion.
EXPLAIN_METHODS = ("gradcam", "gradcam++", "guided-gradcam", "guided-backprop", "saliency", "inversion")

#: How each method's map is drawn, after its paper.
DISPLAY = {
    "gradcam": ("blend", "jet heat map blended over the frame (Selvaraju 2017; Nawaz 2022 Figs. 7-9)"),
    "gradcam++": ("contour", "dashed contours, map as frame opacity (Zimmermann 2019 Fig. 5)"),
    "guided-gradcam": ("signed", "red/blue pixel-space map (Selvaraju 2017; Nawaz 2022 Fig. 7)"),
    "guided-backprop": ("signed", "red/blue pixel-space gradient (Springenberg 2015)"),
    "saliency": ("mask", "pixels with |grad - mean| > 3 sigma shaded brown (Ke 2018 Fig. 10)"),
    "inversion": ("grid", "reconstruction from each convolutional block (Nawaz 2022 Fig. 6)"),
}

_CITATION = {
    "gradcam": "Selvaraju et al. 2017; Nawaz et al. 2022 sec. 3.4, Eqs. 6-7 (captum LayerGradCam)",
    "gradcam++": "Chattopadhyay et al. 2018, Eqs. 10, 19; Zimmermann et al. 2019 sec. 6",
    "guided-gradcam": "Selvaraju et al. 2017; Nawaz et al. 2022 sec. 3.4 (captum GuidedGradCam)",
    "guided-backprop": "Springenberg et al. 2015 (captum GuidedBackprop)",
    "saliency": "Simonyan et al. 2014; Ke et al. 2018 sec. 3.4, Fig. 10",
    "inversion": "Mahendran & Vedaldi 2015; Nawaz et al. 2022 sec. 3.3, Eqs. 1-5",
}


def _safe(name: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_.+" else "_" for ch in name)
    return keep[:60] or "frame"


def _inversion_png(x2d, recs, names):
    from diffscreen.explain.overlay import display_frame, panel_grid

    panels = [(display_frame(img), title, "gray") for img, title in [(x2d, "input"), *zip(recs, names)]]
    return panel_grid(panels, len(recs) + 1, (2.0 * (len(recs) + 1), 2.3))


class ExplainModel:
    """A model file with what explaining it needs: the network, its input recipe and its probabilities.

    Parameters
    ----------
    model : str, Path, ModelBundle, Classifier or None
        Model file (or bundled model name), a loaded bundle, a
        :class:`~diffscreen.models.inference.Classifier`; None = the bundled
        default model.
    device : torch.device or str, optional
        Where the network runs (default: the CPU; a given Classifier keeps
        its own).

    Attributes
    ----------
    bundle : ModelBundle
    model : torch.nn.Module
        The network as trained (gradients and attributions run on it).
    class_names : tuple of str
    multilabel : bool
        True for a CDI model (``train --task cdi``): sigmoid outputs, one per label.
    size : int
        Side S of the network input (N, 1, S, S).

    Raises
    ------
    ModelFileError
        Missing or unreadable model file.
    """

    def __init__(self, model=None, *, device=None):
        import torch

        from diffscreen.models import ModelBundle, load_model
        from diffscreen.models.inference import Classifier
        from diffscreen.preprocess.cdi import CDIPreprocessConfig

        if isinstance(model, Classifier):
            self.bundle, clf = model.bundle, model
            device = model.device
        else:
            self.bundle, clf = (model if isinstance(model, ModelBundle) else load_model(model)), None
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.model = self.bundle.model.eval().to(self.device)
        self.class_names = tuple(self.bundle.class_names)
        self.multilabel = isinstance(self.bundle.preprocess, CDIPreprocessConfig)
        if self.multilabel:
            self._clf, self.size = None, int(self.bundle.preprocess.input_size)
        else:
            self._clf = clf if clf is not None else Classifier(self.bundle, device=self.device)
            self.size = int(self.bundle.preprocess.out_size)

    @property
    def task(self) -> str:
        """``"cdi"`` for a multi-label CDI model, else ``"crystallography"``."""
        return "cdi" if self.multilabel else "crystallography"

    def preprocess(self, frames) -> np.ndarray:
        """Frames → network input ``(N, 1, S, S)`` float32, with the recipe stored in the model file.

        Raises
        ------
        BadFrameError
            A frame the recipe cannot prepare (e.g. a beam centre outside it).
        """
        if not self.multilabel:
            return self._clf.preprocess(frames)
        from diffscreen.preprocess.cdi import prepare_cdi

        cfg = self.bundle.preprocess
        xs = [prepare_cdi(f.data, cfg, mask=f.mask, meta=f.meta) for f in frames]
        return np.stack(xs)[:, None].astype(np.float32, copy=False)

    def probabilities(self, x) -> np.ndarray:
        """``(N, C)`` float32: softmax of the logits, or one sigmoid per label for a multi-label model."""
        if not self.multilabel:
            return self._clf.predict_batch(x)
        from diffscreen.models.batch import predict_arrays

        return predict_arrays(self.model, x, batch_size=max(1, len(x)), multilabel=True)


def resolve_target(class_names, target):
    """Class index from a name or index (None stays None: the predicted class).

    Raises
    ------
    ConfigError
        Unknown class name or index out of range.
    """
    names = list(class_names)
    if target is None:
        return None
    if isinstance(target, str) and not target.lstrip("-").isdigit():
        if target not in names:
            raise ConfigError(f"unknown target class {target!r}; the model's classes are {names}")
        return names.index(target)
    t = int(target)
    if not 0 <= t < len(names):
        raise ConfigError(f"target class index {t} out of range 0..{len(names) - 1}")
    return t


def explain_frames(
    specs,
    out_dir,
    *,
    method: str = "gradcam",
    model=None,
    target=None,
    layer=None,
    max_frames: int | None = None,
    batch_size: int = 4,
    steps: int = 200,
    seed: int = 0,
    progress=None,
    geom=None,
) -> dict:
    """Write attribution PNGs and an HDF5 file of raw maps for frames.

    Parameters
    ----------
    specs : sequence of str
        Frame inputs (files or ``file.h5:/dataset``; see
        :func:`diffscreen.io.expand_inputs`).
    out_dir : str or Path
        Output folder (created).
    method : {"gradcam", "gradcam++", "guided-gradcam", "guided-backprop", "saliency", "inversion"}
    model : str, Path, ModelBundle, Classifier, ExplainModel or None
        Model file of any registered type (see :class:`ExplainModel`);
        None = the bundled model.
    target : str or int or None
        Class to explain (name or index); None = each frame's predicted
        class (multi-label: its most probable label).  Not used by
        ``"inversion"``.
    layer : str, optional
        CAM layer (dotted module name); default as :func:`~diffscreen.explain.find_cam_layer`.
    max_frames : int, optional
        Stop after this many frames.
    batch_size : int
    steps : int
        Adam steps per block for ``"inversion"``.
    seed : int
        Inversion start noise.
    progress : callable, optional
        ``progress(advance=n)`` after each batch.
    geom : str, Path or DetectorGeometry, optional
        A CrystFEL geometry: the inputs hold stacked panels, assembled with it
        (:func:`~diffscreen.io.geom.iter_frames_with_geometry`; a frame of
        another shape is that frame's error).

    Returns
    -------
    dict
        ``n_frames``, ``n_errors``, ``h5`` (path), ``pngs`` (list of paths),
        ``errors`` (list of (file, frame, message)).

    Raises
    ------
    ConfigError
        Unknown method or target class, bad ``max_frames``/``batch_size``, an unusable ``geom``.
    ModelFileError
        Unreadable model file.
    """
    import h5py

    from diffscreen.explain import attribute, find_cam_layer, invert_all, overlay, representation_layers
    from diffscreen.explain import saliency_mask, save_png
    from diffscreen.io import iter_frames
    from diffscreen.io.atomic import atomic_write_text, temporary_path

    if method not in EXPLAIN_METHODS:
        raise ConfigError(f"unknown method {method!r}; use one of {', '.join(EXPLAIN_METHODS)}")
    if batch_size < 1 or (max_frames is not None and max_frames < 1):
        raise ConfigError("batch_size and max_frames must be >= 1")
    if geom is None:
        frames = iter_frames(specs)
    else:
        from diffscreen.io.geom import as_geometry, iter_frames_with_geometry

        frames = iter_frames_with_geometry(specs, as_geometry(geom))
    clf = model if isinstance(model, ExplainModel) else ExplainModel(model)
    names = list(clf.class_names)
    tgt = None if method == "inversion" else resolve_target(names, target)
    if method in ("gradcam", "gradcam++", "guided-gradcam"):
        lay = find_cam_layer(clf.model, layer)
        layer_name = next((n for n, m in clf.model.named_modules() if m is lay), str(layer))
    elif method == "inversion":
        layer_name = ",".join(n for n, _ in representation_layers(clf.model))
    else:
        layer_name = ""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    style, how = DISPLAY[method]
    h5_path = out_dir / f"explain_{method}.h5"
    pngs, errors = [], []
    n = 0
    with temporary_path(h5_path) as tmp, h5py.File(tmp, "w") as h5:
        S = clf.size
        shape = (0, len(representation_layers(clf.model)), S, S) if method == "inversion" else (0, S, S)
        d_maps = h5.create_dataset("maps", shape=shape, maxshape=(None,) + shape[1:], dtype="f4",
                                   chunks=(1,) + shape[1:], compression="gzip", compression_opts=1)
        d_in = h5.create_dataset("input", shape=(0, S, S), maxshape=(None, S, S), dtype="f4", chunks=(1, S, S),
                                 compression="gzip", compression_opts=1)
        d_p = h5.create_dataset("probabilities", shape=(0, len(names)), maxshape=(None, len(names)), dtype="f4")
        d_t = h5.create_dataset("target", shape=(0,), maxshape=(None,), dtype="i4")
        d_f = h5.create_dataset("file", shape=(0,), maxshape=(None,), dtype=h5py.string_dtype())
        d_i = h5.create_dataset("frame", shape=(0,), maxshape=(None,), dtype="i8")
        d_m = None
        if method == "saliency":
            d_m = h5.create_dataset("mask", shape=(0, S, S), maxshape=(None, S, S), dtype=bool, chunks=(1, S, S),
                                    compression="gzip", compression_opts=1)
        h5.attrs.update({
            "method": method, "model": str(clf.bundle.path), "arch": clf.bundle.arch, "task": clf.task,
            "outputs": "sigmoid" if clf.multilabel else "softmax", "class_names": json.dumps(names), "layer": layer_name, "display": how,
            "citation": _CITATION[method],
        })

        def flush(batch):
            nonlocal n
            xs, kept = [], []
            for item in batch:  # a frame the model's recipe cannot prepare is that frame's error only
                try:
                    xs.append(clf.preprocess([item[2]])[0])
                    kept.append(item)
                except DiffscreenError as exc:
                    errors.append((item[0], item[1], getattr(exc, "problem", str(exc))))
            if not kept:
                return
            batch, x = kept, np.stack(xs)
            probs = clf.probabilities(x)
            t = probs.argmax(1) if tgt is None else np.full(len(batch), tgt)
            mask = None
            if method == "inversion":
                maps = np.stack([np.stack([r.image for r in invert_all(clf.model, x[j:j + 1], steps=steps, seed=seed)])
                                 for j in range(len(x))])
            elif method == "saliency":
                maps = attribute(clf.model, x, method="saliency", target=t)
                _, mask = saliency_mask(clf.model, x, target=t)
            else:
                maps = attribute(clf.model, x, method=method, target=t, layer=layer)
            k0 = n
            for arr, ds in ((maps, d_maps), (x[:, 0], d_in), (probs, d_p), (t.astype(np.int32), d_t),
                            (np.array([s for s, _, _ in batch], dtype=object), d_f),
                            (np.array([i for _, i, _ in batch]), d_i)) + (((mask, d_m),) if mask is not None else ()):
                ds.resize(k0 + len(batch), axis=0)
                ds[k0:] = arr
            for j, (spec, idx, _) in enumerate(batch):
                png = out_dir / f"{k0 + j:05d}_{_safe(Path(spec.split(':/')[0]).name)}_f{idx}_{_safe(method)}.png"
                if method == "inversion":
                    img = _inversion_png(x[j, 0], maps[j], [f"block {b + 1}" for b in range(maps.shape[1])])
                elif method == "saliency":
                    shown = np.where(mask[j], maps[j], 0)
                    img = overlay(x[j, 0], shown, style="mask")
                else:
                    img = overlay(x[j, 0], maps[j], style=style)
                save_png(png, img)
                pngs.append(png)
            n += len(batch)
            if progress:
                progress(advance=len(batch))

        batch = []
        for spec, idx, item in frames:
            if isinstance(item, DiffscreenError):
                errors.append((spec, idx, getattr(item, "problem", str(item))))
                continue
            if max_frames is not None and n + len(batch) >= max_frames:
                break
            batch.append((spec, idx, item))
            if len(batch) == batch_size:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
    if errors:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["file", "frame", "error"])
        w.writerows(errors)
        atomic_write_text(out_dir / "errors.csv", buf.getvalue())
    return {"n_frames": n, "n_errors": len(errors), "h5": str(h5_path), "pngs": [str(p) for p in pngs], "errors": errors}
