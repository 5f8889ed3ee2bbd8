"""One batch of one file through a classifier: plan the crop, read, preprocess, run the network.

Two paths give the same probabilities (tests/test_fastpath.py):

* the window path, for a fast :class:`~diffscreen.models.inference.Classifier`
  and a source whose :meth:`~diffscreen.io.base.FrameSource.read_region`
  reads only the window (``src.reads_window``, e.g.
  :class:`~diffscreen.io.hdf5.CXISource`): the crop is planned from the
  frame's metadata (:meth:`~diffscreen.preprocess.fast.FastPreprocessor.plan`),
  only the window's pixels are read, and only they are checked
  (:func:`check_window`);
* the whole-frame path, otherwise: the frame is read whole, checked with
  :func:`~diffscreen.io.frame.check_frame` and cropped by the classifier's
  preprocessor.

Numbers: docs/throughput.md.
"""

from __future__ import annotations

import numpy as np

from diffscreen.errors import BadFrameError, DiffscreenError
from diffscreen.io.frame import check_frame
from diffscreen.preprocess import beam_centre
from diffscreen.preprocess.geometry import geometry_warnings

__all__ = ["predict_source", "check_window"]


def predict_source(clf, src, indices=None, *, batch_size: int = 16, warnings: dict | None = None):
    """Class probabilities of frames of an open source, reading only the crop window where it can.

    Parameters
    ----------
    clf : Classifier
        Its ``preprocessor`` crops and normalises, its ``predict_batch`` runs
        the network; on the reference path (``fast=False``) every frame is
        read whole.
    src : FrameSource
        An open source (:func:`diffscreen.io.open_source`).
    indices : sequence of int, optional
        Frames to classify; default all.
    batch_size : int
        Frames per forward pass at most; on the CPU passes are smaller
        (``clf.frames_per_pass``), which does not change the probabilities.
    warnings : dict, optional
        Filled with frame index → list of geometry warnings
        (:func:`~diffscreen.preprocess.geometry.geometry_warnings`) for
        frames whose recorded geometry is outside physical ranges.

    Returns
    -------
    probs : (N, C) float32 ndarray
        One row per index, columns as ``clf.class_names``; NaN where the
        frame could not be classified.
    errors : dict of int -> str
        Frame index → problem, for frames that could not be read or are
        unusable: unmasked NaN/inf pixels or no signal.  The window path
        checks the crop window only (a frame whose only bad pixels lie
        outside the window is classified, as is one whose window alone is
        blank but is then refused as "no signal in the window").

    Raises
    ------
    Exception
        Whatever is not a :class:`~diffscreen.errors.DiffscreenError` (a
        library's error, a failed forward pass) propagates: the caller
        decides what it means for the batch.
    """
    idx = list(range(len(src))) if indices is None else [int(i) for i in indices]
    C, S = len(clf.class_names), clf.preprocessor.config.out_size
    probs = np.full((len(idx), C), np.nan, np.float32)
    errors: dict = {}
    window = clf.fast and src.reads_window
    pre = clf.preprocessor
    # each pass is read, normalised and classified while its crops are still in the cache
    step = min(batch_size, clf.frames_per_pass or batch_size)
    buf = np.empty((step, S, S), np.float32)
    for b in range(0, len(idx), step):
        rows, centres, n = [], [], 0
        for k in range(b, min(b + step, len(idx))):
            i = idx[k]
            try:
                if window:
                    centre, meta, shape = _window_crop(pre, src, i, buf[n])
                else:
                    fr = check_frame(src.read(i))
                    meta, shape = fr.meta, fr.data.shape
                    buf[n] = pre.crop(fr)
                    centre = pre.centre_in_crop(fr)
            except DiffscreenError as exc:
                errors[i] = exc.problem
                continue
            rows.append(k)
            centres.append(centre)
            n += 1
            if warnings is not None and (w := geometry_warnings(meta, shape)):
                warnings[i] = w
        if n:
            x = pre.normalise_inplace(buf[:n], centres) if clf.fast else pre.normalise(buf[:n], centres)
            probs[rows] = clf.predict_batch(x[:, None])
    return probs, errors


def _window_crop(pre, src, i: int, out: np.ndarray):
    """Crop (before contrast) of frame ``i`` into ``out`` from its window's pixels alone.

    Returns
    -------
    centre : (float, float)
        Beam centre in the crop's pixels.
    meta : FrameMeta
    shape : (int, int)
        ``(H, W)`` of the whole frame.
    """
    meta = src.read_meta(i)
    shape = src.frame_shape(i)
    plan = pre.plan(meta, shape)
    if plan.empty:
        out[...] = 0.0
    else:
        data, bad = src.read_region(i, plan.rows, plan.cols)
        if pre.config.pooling == "max":  # one pass; the crop stands in for the prepared window
            out[...] = pre.from_region(data, bad, plan)
            check_window(data, bad, meta, crop=out)
        else:  # prepared, resampled and checked in one pass
            _, flags = pre.resample_window(data, bad, plan, out=out)
            check_window(data, bad, meta, flags=flags)
    return plan.to_crop(*beam_centre(meta, shape)), meta, shape


def check_window(data, bad, meta, *, crop=None, flags=None) -> None:
    """:func:`~diffscreen.io.frame.check_frame`'s pixel tests on the crop window only.

    Parameters
    ----------
    data : (h, w) ndarray
        Raw pixels of the window (ADU, the file's dtype).
    bad : (h, w) bool ndarray
        True = masked.
    meta : FrameMeta
        Names the file and frame in the error.
    crop : (S, S) float32 ndarray, optional
        The max-pooled crop (NaN where nothing valid), whose extremes tell
        whether any valid pixel is non-zero (max-pooling path).
    flags : WindowFlags, optional
        The counts :meth:`~diffscreen.preprocess.fast.FastPreprocessor.resample_window`
        made in its pass (bilinear path); the pixels are not looked at again.
        One of ``crop`` and ``flags`` is needed.

    Raises
    ------
    BadFrameError
        An unmasked pixel of the window is NaN or ±inf, or every unmasked
        pixel of the window is zero.
    """
    if flags is not None:
        n_bad, empty = flags.nonfinite, flags.empty
    else:
        n_bad = int(np.count_nonzero(~np.isfinite(data) & ~bad)) if data.dtype.kind == "f" else 0
        empty = not (np.fmax.reduce(crop, axis=None) > 0 or np.fmin.reduce(crop, axis=None) < 0)
    if n_bad:
        raise BadFrameError(f"{n_bad} pixels of the crop window are NaN or infinite",
                            path=meta.source, frame=meta.index)
    if empty:
        raise BadFrameError("all pixels of the crop window are zero or masked (empty readout)",
                            path=meta.source, frame=meta.index)
