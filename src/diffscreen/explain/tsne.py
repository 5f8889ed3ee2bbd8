"""t-SNE maps of penultimate features (Ke et al. 2018 Fig. 11; Xie et al. 2022 Fig. 9).

Each frame is the feature vector the last fully connected layer sees
(KeCNN: 32 × 3 × 3 = 288 values; AlexNet: the 4096 outputs of fc7),
embedded in 2-D with scikit-learn's t-SNE (van der Maaten & Hinton 2008),
coloured by label, with thumbnails of chosen frames.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from diffscreen.errors import BadFrameError, ConfigError
from diffscreen.explain.attribution import input_batch, model_device, prepared_model

__all__ = ["penultimate_features", "tsne_embed", "tsne_figure"]

_COLOURS = ["tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:grey"]


def penultimate_features(model: nn.Module, x, batch_size: int = 16) -> np.ndarray:
    """Features entering the model's last ``Linear`` layer.

    Parameters
    ----------
    model : torch.nn.Module
        Uses ``model.forward_features`` if the model has it (KeCNN), else a
        hook on the input of the last ``nn.Linear`` module.
    x : (N, C, S, S) float32 ndarray or tensor
    batch_size : int

    Returns
    -------
    (N, F) float32 ndarray

    Raises
    ------
    ConfigError
        The model has neither ``forward_features`` nor a ``Linear`` layer.
    BadFrameError
        Bad input.
    """
    x = input_batch(x).to(model_device(model))
    lin = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not hasattr(model, "forward_features") and not lin:
        raise ConfigError(f"{type(model).__name__} has no forward_features and no Linear layer")
    out = []
    with prepared_model(model), torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size]
            if hasattr(model, "forward_features"):
                f = model.forward_features(xb)
            else:
                store = {}
                h = lin[-1].register_forward_hook(lambda _m, inp, _o: store.__setitem__("f", inp[0]))
                try:
                    model(xb)
                finally:
                    h.remove()
                f = store["f"]
            out.append(torch.flatten(f, 1).cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def tsne_embed(features, *, seed: int = 0, perplexity: float | None = None) -> np.ndarray:
    """2-D t-SNE embedding (scikit-learn, PCA initialisation).

    Parameters
    ----------
    features : (N, F) array, N >= 3
    seed : int
        ``random_state``; the coordinates depend on it (Ke Fig. 11 caption).
    perplexity : float, optional
        Default ``min(30, (N − 1) / 3)``.

    Returns
    -------
    (N, 2) float32 ndarray

    Raises
    ------
    BadFrameError
        Not 2-D, fewer than 3 rows, or NaN/inf.
    """
    from sklearn.manifold import TSNE

    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 3:
        raise BadFrameError(f"features must be (N >= 3, F), got shape {f.shape}")
    if not np.isfinite(f).all():
        raise BadFrameError("features contain NaN or infinite values")
    p = perplexity if perplexity is not None else min(30.0, (len(f) - 1) / 3)
    return TSNE(2, perplexity=p, init="pca", random_state=seed).fit_transform(f).astype(np.float32)


def tsne_figure(emb, labels, class_names=None, *, thumbnails=None, title: str = "t-SNE of penultimate features"):
    """Scatter plot of an embedding, coloured by label, with frame thumbnails.

    Parameters
    ----------
    emb : (N, 2) array
    labels : (N,) sequence of str or int
        Label of each point (ground truth if known, else the prediction).
    class_names : sequence of str, optional
        Order of the legend / colours; default: sorted unique labels.
    thumbnails : dict {int: (h, w) array}, optional
        Frame images drawn next to the points with those indices (Ke Fig. 11
        insets), with the index as caption.
    title : str

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    from diffscreen.explain.overlay import display_frame

    emb = np.asarray(emb)
    labels = np.asarray([str(v) for v in labels])
    if emb.ndim != 2 or emb.shape[1] != 2 or len(labels) != len(emb):
        raise BadFrameError(f"embedding must be (N, 2) with N labels, got {emb.shape} and {len(labels)} labels")
    names = list(class_names) if class_names is not None else sorted(set(labels))
    fig = Figure(figsize=(7, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    for k, c in enumerate(names):
        sel = labels == c
        if sel.any():
            ax.scatter(emb[sel, 0], emb[sel, 1], s=12, c=_COLOURS[k % len(_COLOURS)], label=f"{c} ({sel.sum()})")
    for i, img in (thumbnails or {}).items():
        im = OffsetImage(display_frame(img), cmap="gray", zoom=48 / max(np.shape(img)))
        ab = AnnotationBbox(im, tuple(emb[i]), xybox=(30, 30), boxcoords="offset points", arrowprops={"arrowstyle": "-"})
        ax.add_artist(ab)
        ax.annotate(str(i), tuple(emb[i]), xytext=(30, 58), textcoords="offset points", fontsize=7, ha="center")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    return fig
