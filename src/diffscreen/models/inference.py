"""Running a model on frames: preprocessing, batching, probabilities."""

from __future__ import annotations

import numpy as np
import torch

from diffscreen.models._api import ModelBundle, load_model
from diffscreen.preprocess import Preprocessor

__all__ = ["Classifier"]


class Classifier:
    """A loaded model with its preprocessing, ready to classify frames.

    Parameters
    ----------
    model : ModelBundle or str or Path or None
        A bundle, a model file, or None for the bundled default model.

    Examples
    --------
    >>> clf = Classifier()                           # doctest: +SKIP
    >>> probs = clf.predict([frame1, frame2])        # doctest: +SKIP
    >>> probs.shape                                  # doctest: +SKIP
    (2, 3)
    """

    def __init__(self, model=None):
        self.bundle = model if isinstance(model, ModelBundle) else load_model(model)
        self.model = self.bundle.model.eval()
        self.preprocessor = Preprocessor(self.bundle.preprocess)
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
        return torch.softmax(self.model(t), dim=1).numpy()

    def predict(self, frames) -> np.ndarray:
        """Class probabilities ``(N, C)`` float32 for a sequence of :class:`Frame`."""
        return self.predict_batch(self.preprocess(frames))
