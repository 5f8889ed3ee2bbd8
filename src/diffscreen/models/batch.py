"""Batched prediction of a network on inputs held in memory."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["predict_arrays"]


@torch.inference_mode()
def predict_arrays(model, x, *, batch_size: int = 64, multilabel: bool = False) -> np.ndarray:
    """Class probabilities of ``model`` on preprocessed inputs, ``batch_size`` at a time, in eval mode.

    Parameters
    ----------
    model : torch.nn.Module
        Returns logits ``(B, C)``; left in eval mode.
    x : (N, 1, S, S) or (N, 1, S) array_like or CPU tensor
        Preprocessed inputs (any float dtype; cast to float32 batch by batch
        and moved to the model's device).
    batch_size : int
    multilabel : bool
        Sigmoid per class (multi-label, Zimmermann et al. 2019 §3.1.5)
        instead of the softmax over the classes (Ke et al. 2018 §2.1).

    Returns
    -------
    (N, C) float32 ndarray
        Probabilities; ``(0, 0)`` for no input.
    """
    model.eval()
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    link = torch.sigmoid if multilabel else (lambda t: torch.softmax(t, dim=1))
    out = []
    for i in range(0, len(x), batch_size):
        t = torch.from_numpy(np.asarray(x[i : i + batch_size], dtype=np.float32)).to(dev)
        out.append(link(model(t)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
