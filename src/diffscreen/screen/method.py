"""Screening methods: what decides, frame by frame, during a screening run.

A method names its classes (``class_names``) and its score columns
(``score_columns``), identifies its settings (``identity``, so a resumed run
uses the same) and, for frames ``indices`` of an open source, returns one
:class:`FrameDecision` per frame (or a one-line problem for a frame it could
not classify) through ``classify_source(src, indices)``.  The decision says
whether the frame is kept; the runner (:mod:`diffscreen.screen.runner`)
never interprets labels.

* :class:`CNNMethod`: a trained hit/maybe/miss classifier with the Ke et al.
  (2018) §2.1 decision, reading only the crop window where it can
  (:func:`diffscreen.screen.pipeline.predict_source`), then the spot gate on
  the frames it keeps (:func:`diffscreen.models.decision.spot_gate`);
* :class:`PerFrame`: any object with ``classify(frames)`` on whole frames,
  e.g. the peakfinder8 baseline (:class:`diffscreen.baselines.Peakfinder8`);
* :class:`CDIMethod`: a multi-label CDI model (Zimmermann et al. 2019), whose
  decisions carry the sigmoid probabilities and the set of positive labels.

Each method's ``outputs`` (:mod:`diffscreen.screen.outputs`) says how its
decisions are written to scores.csv and counted in summary.json.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from diffscreen.errors import ConfigError, DiffscreenError, ModelFileError
from diffscreen.io.frame import check_frame
from diffscreen.models.decision import KEEP_MIN_SPOTS, decide, spot_gate
from diffscreen.preprocess.geometry import geometry_warnings
from diffscreen.preprocess.spots import DEFAULT_SPOT_CONFIG, METRIC_COLUMNS, frame_metrics
from diffscreen.screen.outputs import HitOutputs, MultiLabelOutputs
from diffscreen.screen.pipeline import predict_source

__all__ = ["FrameDecision", "ScreeningMethod", "CNNMethod", "PerFrame", "CDIMethod", "as_method", "problem_of",
           "decision_problem", "load_cdi_model", "read_checked"]


@dataclass
class FrameDecision:
    """A screening method's verdict on one frame.

    Attributes
    ----------
    scores : tuple of float
        Values of the method's ``score_columns`` (written to scores.csv).
    label : str
        One of the method's ``class_names``.
    keep : bool
        Whether the frame goes to hits.lst / hits.cxi.
    probabilities : (C,) float32 ndarray or None
        Class probabilities, stored in hits.cxi when given.
    peaks : (P, 4) float32 ndarray or None
        Peaks found (x, y, intensity, SNR), stored in hits.cxi when given.
    warnings : tuple of str
        Problems that did not stop the frame (geometry outside physical
        ranges, treated as unknown); written to errors.csv as ``warning: ...``.
    metrics : FrameMetrics or None
        The per-frame numbers (spots, resolution, rings;
        :func:`diffscreen.preprocess.spots.frame_metrics`) when the method
        computed them for this frame; their scores.csv cells are empty otherwise.
    frame : Frame or None
        The whole checked frame, when the method read it whole to decide or
        to compute its numbers and kept it, so that the runner writes it to
        the hits' CXI file without reading and decoding it again.  The runner
        drops it once written, and it is never pickled to another process.
    """

    scores: tuple
    label: str
    keep: bool
    probabilities: np.ndarray | None = None
    peaks: np.ndarray | None = None
    warnings: tuple = ()
    metrics: object | None = None
    frame: object | None = field(default=None, repr=False, compare=False)

    def __getstate__(self):
        return {**self.__dict__, "frame": None}  # a whole frame does not travel between processes


@runtime_checkable
class ScreeningMethod(Protocol):
    """What :func:`diffscreen.screen.screen` asks of a method.

    Attributes
    ----------
    class_names : tuple of str
        Labels the method gives.
    score_columns : tuple of str
        Names of :attr:`FrameDecision.scores`, the scores.csv columns.
    identity : str
        Identifies the method and its settings (model file hash, parameters).
    outputs : HitOutputs or MultiLabelOutputs
        How its decisions are written and counted
        (:mod:`diffscreen.screen.outputs`).
    """

    class_names: tuple
    score_columns: tuple
    identity: str
    outputs: object

    def classify_source(self, src, indices) -> list:
        """One :class:`FrameDecision`, or a one-line problem (str), per index of the open source ``src``."""
        ...


def _file_identity(path) -> str:
    """First 16 hex digits of the SHA-256 of a model file, or ``"in-memory"``."""
    if path and Path(path).is_file():
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    return "in-memory"


def decision_problem(d) -> str | None:
    """Why a method's answer for a frame cannot stand, or None: the problem string a method gave instead of a
    decision, or a non-finite score or probability (never a label).

    Parameters
    ----------
    d : FrameDecision or str
        One element of ``classify_source``'s result.
    """
    if isinstance(d, str):
        return d
    vals = list(d.scores) + ([] if d.probabilities is None else list(np.ravel(d.probabilities)))
    if not np.all(np.isfinite(np.asarray(vals, dtype=np.float64))):
        return "the classifier gave a non-finite score (NaN or inf); the frame is not classified"
    return None


def problem_of(exc: BaseException) -> str:
    """One line describing why a file or frame failed (the ``error`` column of errors.csv).

    A diffscreen error gives its problem (the file and frame are in their own
    columns); anything else (h5py, fabio, pycbf, numpy, torch) its type and
    first line, so that no library's exception stops a run.
    """
    if isinstance(exc, DiffscreenError):
        return exc.problem
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else 'no message'}"


#: How the gate counts, in the method's identity: a digest of every setting of the spot finder and of its ring,
#: streak and line tests and of its version (:meth:`~diffscreen.preprocess.spots.SpotConfig.to_dict`), so that a run
#: resumed from a version that counted otherwise never mixes the two counts.
_GATE_COUNT = "spots=" + hashlib.sha256(
    json.dumps(DEFAULT_SPOT_CONFIG.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


class CNNMethod:
    """A trained classifier as a screening method (Ke et al. 2018 §2.1 decision).

    Parameters
    ----------
    clf : Classifier
        Its path decides how frames are handled: the fast path by default
        (``Classifier(model)``), the reference path with
        ``Classifier(model, fast=False)`` (CLI ``screen --reference-path``).
        Both give the same probabilities to 1e-4 (docs/throughput.md).

    metrics : {"kept", "all", "none"}
        Which frames get the per-frame numbers of scores.csv (``n_spots``,
        ``n_spots_no_rings``, ``d_min_A``, ``ice_rings``, ``powder_rings``, ``jet_streak``) and a peak
        list in hits.cxi (:func:`diffscreen.preprocess.spots.frame_metrics`, on the
        frame read whole at native resolution): the kept frames (default; the
        whole frame is read for hits.cxi anyway, and on every frame they would
        cost more than the 10 % of throughput issue 15 allows,
        docs/per_frame_metrics.md), every frame, or none (no such columns).
    min_spots : int
        The spot gate (:func:`diffscreen.models.decision.spot_gate`): a frame
        the network keeps is dropped, labelled ``"miss"``, when the spot
        finder finds fewer spots on it off every ring and jet streak (its
        ``n_spots_no_rings`` cell says so); 0: the network alone.  The spots are found on the
        frames the network keeps, whatever ``metrics`` says; a frame whose spots cannot be counted
        stays kept, with a warning in errors.csv.

    Raises
    ------
    ModelFileError
        The model's classes lack ``"miss"`` (not a hit/maybe/miss model).
    ConfigError
        ``metrics`` is not one of the three, or ``min_spots`` < 0.
    """

    def __init__(self, clf, metrics: str = "kept", min_spots: int = KEEP_MIN_SPOTS):
        if metrics not in ("kept", "all", "none"):
            raise ConfigError(f"metrics must be kept, all or none, not {metrics!r}")
        if int(min_spots) < 0:
            raise ConfigError(f"min_spots must be >= 0, got {min_spots}")
        self.metrics = metrics
        self.min_spots = int(min_spots)
        self.clf = clf
        self.class_names = tuple(clf.class_names)
        if "miss" not in self.class_names:
            raise ModelFileError(f"the model's classes {', '.join(self.class_names)} lack 'miss': screening needs a "
                                 "hit/maybe/miss model (a CDI model screens with --task cdi)", path=clf.bundle.path)
        self.score_columns = tuple(f"p_{c}" for c in self.class_names)
        self.outputs = HitOutputs(self.score_columns, () if metrics == "none" else METRIC_COLUMNS)
        self.path = clf.bundle.path
        self.identity = (_file_identity(self.path) + ("" if metrics == "none" else f":metrics={metrics}")
                         + (f":min_spots_off_rings={self.min_spots}:{_GATE_COUNT}" if self.min_spots
                            else ""))

    def _decisions(self, probs) -> list[FrameDecision]:
        keep, labels = decide(probs, self.class_names)
        return [FrameDecision(tuple(float(v) for v in p), lab, bool(k), p) for p, k, lab in zip(probs, keep, labels)]

    def classify_source(self, src, indices) -> list:
        """Decisions for frames ``indices`` of an open source, reading only what the crop needs.

        Returns
        -------
        list of FrameDecision or str
            One per index, in order; a str is the problem of a frame that
            could not be classified.
        """
        warnings: dict = {}
        probs, errors = predict_source(self.clf, src, indices, batch_size=max(1, len(indices)), warnings=warnings)
        ok = [k for k, i in enumerate(indices) if i not in errors]
        out = [errors.get(i) for i in indices]
        for k, d in zip(ok, self._decisions(probs[ok])):
            d.warnings = tuple(warnings.get(indices[k], ()))
            if self.metrics == "all" or (d.keep and (self.metrics == "kept" or self.min_spots)):
                _add_metrics(src, indices[k], d)
            counted = d.keep and d.metrics is not None
            if counted and not spot_gate([True], [d.metrics.n_spots_no_rings], self.min_spots)[0]:
                d.keep, d.label, d.frame = False, "miss", None
            if self.metrics == "none":
                d.metrics = d.peaks = None
            out[k] = d
        return out


def _add_metrics(src, i: int, d: FrameDecision) -> None:
    """Set ``d.metrics`` and ``d.peaks`` from frame ``i`` read whole (and ``d.frame`` if kept); a failure is a
    warning, the cells stay empty."""
    try:
        fr = check_frame(src.read(i))
        m = frame_metrics(fr)
    except Exception as exc:  # noqa: BLE001 - the numbers are extra: the decision stands without them
        d.warnings = (*d.warnings, f"per-frame numbers not computed ({problem_of(exc)})")
        return
    d.metrics, d.peaks = m, m.peaks
    if d.keep:
        d.frame = fr


class PerFrame:
    """A method that decides on whole frames (``classify(frames)``) as a :class:`ScreeningMethod`.

    Parameters
    ----------
    method : object
        With ``class_names``, ``score_columns``, ``identity`` and
        ``classify(frames) -> list[FrameDecision]``, e.g.
        :class:`diffscreen.baselines.Peakfinder8`.
    """

    def __init__(self, method):
        self.method = method
        self.class_names = tuple(method.class_names)
        self.score_columns = tuple(method.score_columns)
        self.identity = method.identity
        self.path = getattr(method, "path", None)
        self.outputs = HitOutputs(self.score_columns)

    def classify_source(self, src, indices) -> list:
        """Read frames ``indices`` whole, refuse unusable ones (:func:`check_frame`), classify the rest.

        Returns
        -------
        list of FrameDecision or str
            One per index; a str is the problem of a frame that could not be
            read or is unusable.  Decisions carry the frame's geometry
            warnings.
        """
        out, good = read_checked(src, indices)
        frames = [fr for _, fr in good]
        for (k, fr), d in zip(good, self.method.classify(frames) if frames else []):
            d.warnings = tuple(d.warnings) + tuple(geometry_warnings(fr.meta, fr.data.shape))
            d.frame = fr if d.keep else None
            out[k] = d
        return out


def read_checked(src, indices) -> tuple[list, list]:
    """Read frames ``indices`` of an open source whole and refuse unusable ones (:func:`check_frame`).

    Returns
    -------
    out : list of str or None
        One per index: the problem of a frame that could not be read or is
        unusable, else None (for the caller to fill with its decision).
    good : list of (int, Frame)
        Position in ``indices`` and frame, for every usable frame, in order.
    """
    out, good = [None] * len(indices), []
    for k, i in enumerate(indices):
        try:
            good.append((k, check_frame(src.read(i))))
        except Exception as exc:  # noqa: BLE001 - one frame's failure is its problem
            out[k] = problem_of(exc)
    return out, good


def as_method(method) -> ScreeningMethod:
    """``method`` as a :class:`ScreeningMethod`: itself, or wrapped in :class:`PerFrame` when it classifies frames."""
    return method if isinstance(method, ScreeningMethod) else PerFrame(method)


#: errors.csv text for a frame whose multi-label probabilities are not finite
NONFINITE_PROBABILITY = "the classifier gave a non-finite probability (NaN or inf); the frame is not classified"


def load_cdi_model(path):
    """Load a CDI model file and check that it is one.

    Parameters
    ----------
    path : str, Path or None
        A model written by ``diffscreen train --task cdi``; None or ``"cdi"``:
        the bundled CDI model (``scripts/make_cdi_model.py``, docs/cdi_model.md).

    Returns
    -------
    ModelBundle

    Raises
    ------
    ConfigError
        The file holds a model for another task.
    ModelFileError
        Missing or corrupt file.
    """
    from diffscreen.models import load_model
    from diffscreen.preprocess.cdi import CDIPreprocessConfig

    if path is None:
        path = "cdi"
    bundle = load_model(path)
    if bundle.meta.get("task") != "cdi" or not isinstance(bundle.preprocess, CDIPreprocessConfig):
        raise ConfigError(f"{path} is not a CDI model (task {bundle.meta.get('task', 'crystallography')!r})")
    return bundle


class CDIMethod:
    """A multi-label CDI model as a screening method (Zimmermann et al. 2019).

    Every frame is read whole, checked (:func:`check_frame`) and prepared
    with the recipe stored in the model file (a diffraction image or a CCF
    map, :func:`diffscreen.preprocess.cdi.prepare_cdi`); the network's
    sigmoid outputs are the probabilities, a class is set at ``threshold``.
    No frame is kept (no hits list): the labels are the result.

    Parameters
    ----------
    bundle : ModelBundle
        From :func:`load_cdi_model`.
    threshold : float
        Probability at which a label is set, 0 < threshold < 1.

    Raises
    ------
    ConfigError
        ``threshold`` outside (0, 1).
    """

    def __init__(self, bundle, threshold: float = 0.5):
        if not (0 < threshold < 1):
            raise ConfigError(f"threshold must be in (0, 1), got {threshold}")
        self.bundle, self.threshold = bundle, threshold
        self.net = bundle.model.eval()
        self.class_names = tuple(bundle.class_names)
        self.score_columns = tuple(f"p_{n}" for n in self.class_names)
        self.path = bundle.path
        self.identity = f"{_file_identity(bundle.path)}:threshold={threshold!r}"
        self.outputs = MultiLabelOutputs(self.class_names, threshold, bundle.path, bundle.preprocess.to_dict())

    def classify_source(self, src, indices) -> list:
        """Decisions for frames ``indices`` of an open source, one forward pass.

        Returns
        -------
        list of FrameDecision or str
            One per index; a str is the problem of a frame that could not be
            read or prepared, or whose probabilities are not finite.
            ``scores`` and ``probabilities`` are the sigmoid outputs,
            ``label`` the positive class names joined by ``;``.
        """
        from diffscreen.models.batch import predict_arrays
        from diffscreen.preprocess.cdi import prepare_cdi

        out, good = read_checked(src, indices)
        xs, ks = [], []
        for k, fr in good:
            try:
                xs.append(prepare_cdi(fr.data, self.bundle.preprocess, mask=fr.mask, meta=fr.meta))
                ks.append(k)
            except Exception as exc:  # noqa: BLE001 - one frame's failure is its problem
                out[k] = problem_of(exc)
        if not xs:
            return out
        P = predict_arrays(self.net, np.stack(xs)[:, None], batch_size=len(xs), multilabel=True)
        for k, p in zip(ks, P):
            if not np.isfinite(p).all():  # never a silent label from NaN probabilities
                out[k] = NONFINITE_PROBABILITY
                continue
            label = ";".join(n for n, b in zip(self.class_names, p >= self.threshold) if b)
            out[k] = FrameDecision(tuple(float(v) for v in p), label, False, p)
        return out
