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

__all__ = ["Classifier", "CPU_PASS_BYTES"]

#: Input bytes per forward pass on the CPU.  The Ke CNN's first convolution
#: and pooling run ~3× faster per frame when a pass's input and first feature
#: map stay in the core's cache: at 720 × 720 on one core (docs/throughput.md),
#: 3.4 ms per frame in passes of 2 frames against 10 ms in passes of 16.
CPU_PASS_BYTES = 4 << 20


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

    @property
    def frames_per_pass(self) -> int | None:
        """Most frames :meth:`predict_batch` sends through the network at once; None: no limit.

        On the CPU, as many ``S × S`` float32 inputs as fit in
        :data:`CPU_PASS_BYTES` (at least 2); on a GPU, no limit (one pass per
        batch).  The probabilities do not depend on it (see
        :meth:`predict_batch`).
        """
        if self.device.type != "cpu":
            return None
        s = int(self.bundle.preprocess.out_size)
        return max(2, CPU_PASS_BYTES // (4 * s * s))

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
        On the CPU the batch goes through the network :attr:`frames_per_pass`
        frames at a time (a last lone frame again as two): the same bits as
        one pass (tests/test_models.py), with each pass in the cache.
        """
        t = torch.as_tensor(x)
        if len(t) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        step = self.frames_per_pass or len(t)
        return np.concatenate([self._probabilities(t[i : i + step]) for i in range(0, len(t), step)])

    def _probabilities(self, t: torch.Tensor) -> np.ndarray:
        one = len(t) == 1
        if one:
            t = t.expand(2, *t.shape[1:])
        p = torch.softmax(self._net(t.to(self.device)), dim=1).cpu().numpy()
        return p[:1] if one else p

    def predict(self, frames) -> np.ndarray:
        """Class probabilities ``(N, C)`` float32 for a sequence of :class:`Frame`."""
        return self.predict_batch(self.preprocess(frames))
