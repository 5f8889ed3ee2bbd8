"""Running a model on frames in memory: preprocessing, the network, probabilities.

Reading frames from a file (the crop window only, where the reader can) is
:func:`diffscreen.screen.pipeline.predict_source`'s job.

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
from diffscreen.preprocess import Preprocessor
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
    device : torch.device or str, optional
        Where the network runs (default: the CPU); inputs are moved there
        batch by batch and probabilities come back to the CPU.  The CLI's
        ``--device`` (:func:`diffscreen.models.device.resolve_device`).

    Attributes
    ----------
    model : torch.nn.Module
        The network as trained (eval mode, on ``device``); use it for
        gradients and attribution.
    device : torch.device
    preprocessor : Preprocessor
        :class:`FastPreprocessor` on the fast path (a drop-in subclass).

    Examples
    --------
    >>> clf = Classifier()                           # doctest: +SKIP
    >>> probs = clf.predict([frame1, frame2])        # doctest: +SKIP
    >>> probs.shape                                  # doctest: +SKIP
    (2, 3)
    """

    def __init__(self, model=None, *, fast: bool = True, device=None):
        self.bundle = model if isinstance(model, ModelBundle) else load_model(model)
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.model = self.bundle.model.eval().to(self.device)
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

        Notes
        -----
        A frame's probabilities do not depend on the other frames of the
        batch: a lone frame is run as a batch of two (itself twice), because
        PyTorch's CPU convolutions take another code path for a batch of one,
        whose results differ in the last bits (a live stream's batches are
        made by arrival, a file's by order; both must give the same scores.csv).
        """
        t = torch.as_tensor(x)
        if len(t) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        one = len(t) == 1
        if one:
            t = t.expand(2, *t.shape[1:])
        p = torch.softmax(self._net(t.to(self.device)), dim=1).cpu().numpy()
        return p[:1] if one else p

    def predict(self, frames) -> np.ndarray:
        """Class probabilities ``(N, C)`` float32 for a sequence of :class:`Frame`."""
        return self.predict_batch(self.preprocess(frames))
