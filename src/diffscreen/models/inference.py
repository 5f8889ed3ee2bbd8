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
