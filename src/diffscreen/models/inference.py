"""Running a model on frames: preprocessing, batching, probabilities.

Two paths give the same answers (tests/test_fastpath.py):

* the fast path (default): :class:`~diffscreen.preprocess.fast.FastPreprocessor`
  (only the crop window's pixels are touched; sparse resampling; one-pass
  LCN) and the network with BatchNorm folded into its convolutions
  (:func:`~diffscreen.models.fused.inference_model`);
* the reference path (``Classifier(..., fast=False)``):
  :class:`~diffscreen.preprocess.Preprocessor` and the network as trained.

Numbers: docs/throughput.md.
"""

from __future__ import annotations

import numpy as np
import torch

from diffscreen.models._api import ModelBundle, load_model
from diffscreen.preprocess import Preprocessor, beam_centre
from diffscreen.preprocess.geometry import geometry_warnings
from diffscreen.preprocess.fast import FastPreprocessor

__all__ = ["Classifier"]


class Classifier:
    """A loaded model with its preprocessing, ready to classify frames.

    Parameters
    ----------
    model : ModelBundle or str or Path or None
        A bundle, a model file, or None for the bundled default model.
    fast : bool
        True (default): the fast path (fast preprocessing, BatchNorm folded
        for inference); False: the reference path.  Probabilities agree to
        about 1e-5 and decisions are identical on our test frames.

    Attributes
    ----------
    model : torch.nn.Module
        The network as trained (eval mode); use it for gradients and
        attribution.
    preprocessor : Preprocessor
        :class:`FastPreprocessor` on the fast path (a drop-in subclass).

    Examples
    --------
    >>> clf = Classifier()                           # doctest: +SKIP
    >>> probs = clf.predict([frame1, frame2])        # doctest: +SKIP
    >>> probs.shape                                  # doctest: +SKIP
    (2, 3)
    """

    def __init__(self, model=None, *, fast: bool = True):
        self.bundle = model if isinstance(model, ModelBundle) else load_model(model)
        self.model = self.bundle.model.eval()
        self.fast = bool(fast)
        if self.fast:
            from diffscreen.models.fused import inference_model

            self.preprocessor = FastPreprocessor(self.bundle.preprocess)
            self._net = inference_model(self.model)
        else:
            self.preprocessor = Preprocessor(self.bundle.preprocess)
            self._net = self.model
        self.class_names = tuple(self.bundle.class_names)

    def preprocess(self, frames) -> np.ndarray:
        """Frames → network input ``(N, 1, S, S)`` float32 (centre crops)."""
        return self.preprocessor(frames)

    @torch.inference_mode()
    def predict_batch(self, x) -> np.ndarray:
        """Class probabilities of preprocessed input.

        Parameters
        ----------
        x : (N, 1, S, S) float32 ndarray or tensor

        Returns
        -------
        (N, C) float32 ndarray
            Softmax probabilities (Ke Eq. 3), columns as ``class_names``.
        """
        t = torch.as_tensor(x)
        if len(t) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        return torch.softmax(self._net(t), dim=1).numpy()

    def predict(self, frames) -> np.ndarray:
        """Class probabilities ``(N, C)`` float32 for a sequence of :class:`Frame`."""
        return self.predict_batch(self.preprocess(frames))

    def predict_source(self, src, indices=None, *, batch_size: int = 16, warnings: dict | None = None):
        """Class probabilities of frames of an open source, reading only the crop window where it can.

        The fast screening path end to end: for a source with ``read_meta``
        and ``read_region`` (:class:`~diffscreen.io.hdf5.CXISource`) only the
        pixels the crop needs are read from the file; other sources are read
        whole.  On the reference path (``fast=False``) every frame is read
        whole and checked with :func:`~diffscreen.io.frame.check_frame`.

        Parameters
        ----------
        src : FrameSource
            An open source (:func:`diffscreen.io.open_source`).
        indices : sequence of int, optional
            Frames to classify; default all.
        batch_size : int
            Frames per forward pass.
        warnings : dict, optional
            Filled with frame index → list of geometry warnings
            (:func:`~diffscreen.preprocess.geometry.geometry_warnings`) for
            frames whose recorded geometry is outside physical ranges.

        Returns
        -------
        probs : (N, C) float32 ndarray
            One row per index; NaN where the frame could not be classified.
        errors : dict of int -> str
            Frame index → problem, for frames that could not be read or are
            unusable: unmasked NaN/inf pixels or no signal.  The fast path
            checks the crop window only (a frame whose only bad pixels lie
            outside the window is classified, as is one whose window alone
            is blank but is then refused as "no signal in the window").
        """
        from diffscreen.errors import DiffscreenError
        from diffscreen.io.frame import check_frame

        idx = list(range(len(src))) if indices is None else [int(i) for i in indices]
        C, S = len(self.class_names), self.preprocessor.config.out_size
        probs = np.full((len(idx), C), np.nan, np.float32)
        errors: dict = {}
        regions = self.fast and hasattr(src, "read_region") and hasattr(src, "read_meta")
        pre = self.preprocessor
        buf = np.empty((batch_size, S, S), np.float32)
        for b in range(0, len(idx), batch_size):
            rows, centres, n = [], [], 0
            for k in range(b, min(b + batch_size, len(idx))):
                i = idx[k]
                try:
                    if not regions:
                        fr = check_frame(src.read(i))
                        meta, shape = fr.meta, fr.data.shape
                        buf[n] = pre.crop(fr)
                        centre = pre.centre_in_crop(fr)
                    else:
                        meta = src.read_meta(i)
                        shape = src.frame_shape(i) if hasattr(src, "frame_shape") else src.shape
                        plan = pre.plan(meta, shape)
                        if plan.empty:
                            buf[n] = 0.0
                        else:
                            data, bad = src.read_region(i, plan.rows, plan.cols)
                            if pre.config.pooling == "max":  # one pass; the crop stands in for the prepared window
                                buf[n] = pre.from_region(data, bad, plan)
                                _check_window(data, bad, None, meta, crop=buf[n])
                            else:
                                prep = pre.prepare(data, bad)
                                _check_window(data, bad, prep, meta)
                                buf[n] = pre.resample(prep, plan)
                        centre = plan.to_crop(*beam_centre(meta, shape))
                    rows.append(k)
                    centres.append(centre)
                    n += 1
                    if warnings is not None and (w := geometry_warnings(meta, shape)):
                        warnings[i] = w
                except DiffscreenError as exc:
                    errors[i] = exc.problem
            if n:
                x = pre.normalise_inplace(buf[:n], centres) if self.fast else pre.normalise(buf[:n], centres)
                probs[rows] = self.predict_batch(x[:, None])
        return probs, errors


def _check_window(data, bad, prep, meta, *, crop=None) -> None:
    """check_frame's tests on the crop window only.

    Cheap: ``prep`` is the prepared window (bilinear path), or ``crop`` the
    max-pooled crop (NaN where nothing valid), whose extremes tell whether
    any valid pixel is non-zero.
    """
    from diffscreen.errors import BadFrameError

    if data.dtype.kind == "f":
        nonfinite = ~np.isfinite(data)
        nonfinite &= ~bad
        if nonfinite.any():
            raise BadFrameError(f"{int(nonfinite.sum())} pixels of the crop window are NaN or infinite",
                                path=meta.source, frame=meta.index)
    if crop is not None:
        empty = not (np.fmax.reduce(crop, axis=None) > 0 or np.fmin.reduce(crop, axis=None) < 0)
    else:
        empty = not prep.any() and not np.any(data[~bad])
    if empty:
        raise BadFrameError("all pixels of the crop window are zero or masked (empty readout)",
                            path=meta.source, frame=meta.index)
