"""Heat maps over frames, drawn the way the papers draw them.

``style="blend"``
    Jet-coloured heat map alpha-blended over the grey frame (Grad-CAM,
    Selvaraju et al. 2017 Fig. 1; Nawaz et al. 2022 Figs. 7–9).
``style="mask"``
    Only the non-zero pixels of the map, as brown shading over the frame
    (Ke et al. 2018 Fig. 10: saliency beyond 3σ).
``style="contour"``
    Dashed contour lines of the normalised map, the map also used as the
    frame's opacity so that the most relevant regions are brightest
    (Zimmermann et al. 2019 §6, Fig. 5, Grad-CAM++).
``style="signed"``
    Red/blue for positive/negative values on white (guided backpropagation
    and Guided Grad-CAM, pixel-space gradients).
"""

from __future__ import annotations

import io

import numpy as np

from diffscreen.errors import BadFrameError, ConfigError

__all__ = ["overlay", "display_frame", "panel_grid", "to_png_bytes", "save_png", "STYLES"]

STYLES = ("blend", "mask", "contour", "signed")


def _check2d(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2:
        raise BadFrameError(f"{name} must be 2-D (H, W), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise BadFrameError(f"{name} contains NaN or infinite values")
    return a.astype(np.float64)


def display_frame(image, lo_pct: float = 1.0, hi_pct: float = 99.5) -> np.ndarray:
    """Grey levels in [0, 1] for display: percentile stretch, bright = high.

    Parameters
    ----------
    image : (H, W) array
    lo_pct, hi_pct : float
        Percentiles mapped to 0 and 1.

    Returns
    -------
    (H, W) float64 ndarray in [0, 1]
    """
    a = _check2d(image, "image")
    lo, hi = np.percentile(a, [lo_pct, hi_pct])
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((a - lo) / (hi - lo), 0, 1)


def _norm01(h: np.ndarray) -> np.ndarray:
    m = h.max()
    return h / m if m > 0 else np.zeros_like(h)


def overlay(image_2d, heat_2d, *, style: str = "blend", alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Draw a heat map over a frame.

    Parameters
    ----------
    image_2d : (H, W) array
        The frame (typically the preprocessed network input).
    heat_2d : (H, W) array
        The map, same shape (e.g. one of :func:`~diffscreen.explain.attribute`'s).
        For ``"blend"``/``"contour"`` it is normalised to its maximum
        (negative values clipped); for ``"mask"`` zero means "not shown".
    style : {"blend", "mask", "contour", "signed"}
        See the module docstring.
    alpha : float
        Heat-map opacity for ``"blend"`` and ``"mask"`` (0–1).
    cmap : str
        Matplotlib colour map for ``"blend"``.

    Returns
    -------
    (H, W, 3) uint8 ndarray
        RGB image.

    Raises
    ------
    BadFrameError
        Shapes differ, not 2-D, or NaN/inf.
    ConfigError
        Unknown style or alpha outside [0, 1].
    """
    if style not in STYLES:
        raise ConfigError(f"unknown overlay style {style!r}; use one of {', '.join(STYLES)}")
    if not 0 <= alpha <= 1:
        raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
    img = display_frame(image_2d)
    h = _check2d(heat_2d, "heat map")
    if h.shape != img.shape:
        raise BadFrameError(f"heat map shape {h.shape} differs from image shape {img.shape}")
    import matplotlib

    grey = np.repeat(img[..., None], 3, axis=2)
    if style == "blend":
        col = matplotlib.colormaps[cmap](_norm01(np.clip(h, 0, None)))[..., :3]
        rgb = (1 - alpha) * grey + alpha * col
    elif style == "mask":
        brown = np.array([0.65, 0.33, 0.1])
        on = (h != 0)[..., None]
        rgb = np.where(on, (1 - alpha) * grey + alpha * brown, grey)
    elif style == "signed":
        m = np.abs(h).max()
        v = h / m if m > 0 else h
        rgb = np.ones(h.shape + (3,))
        pos, neg = np.clip(v, 0, 1), np.clip(-v, 0, 1)
        rgb[..., 1] -= pos + neg
        rgb[..., 2] -= pos
        rgb[..., 0] -= neg
        rgb = np.clip(rgb, 0, 1)
    else:  # contour
        rgb = _contour(img, _norm01(np.clip(h, 0, None)))
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def _contour(img: np.ndarray, h: np.ndarray) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    H, W = img.shape
    dpi = 100
    fig = Figure(figsize=(W / dpi, H / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    # frame brightness scaled by the map (Zimmermann Fig. 5: map as opacity)
    ax.imshow(img * (0.25 + 0.75 * h), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if h.max() > 0:
        ax.contour(h, levels=[0.2, 0.4, 0.6, 0.8], colors="yellow", linestyles="dashed", linewidths=1.0)
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5, -0.5)
    fig.canvas.draw()
    buf = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    if buf.shape[:2] != (H, W):  # rounding of the figure size
        ys = np.linspace(0, buf.shape[0] - 1, H).astype(int)
        xs = np.linspace(0, buf.shape[1] - 1, W).astype(int)
        buf = buf[ys][:, xs]
    return buf.astype(np.float64) / 255.0


def panel_grid(panels, ncols: int, figsize: tuple):
    """A matplotlib Figure (100 dpi, ``figsize`` in inches) of image panels ``(image, title, cmap)`` drawn row by
    row, ``ncols`` to a row, without axes; a None panel leaves its cell empty (e.g. an inversion per layer, Nawaz
    et al. 2022 Fig. 6)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    nrows = -(-len(panels) // ncols)
    for i, panel in enumerate(panels):
        if panel is None:
            continue
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.imshow(panel[0], cmap=panel[2])
        ax.set_title(panel[1], fontsize=8)
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def to_png_bytes(rgb) -> bytes:
    """Encode an (H, W, 3) uint8 image (or a matplotlib Figure) as PNG bytes."""
    bio = io.BytesIO()
    if hasattr(rgb, "savefig"):  # a matplotlib Figure
        rgb.savefig(bio, format="png", dpi=rgb.dpi, bbox_inches="tight")
    else:
        from PIL import Image  # a matplotlib dependency

        a = np.asarray(rgb)
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] not in (3, 4):
            raise BadFrameError(f"expected an (H, W, 3) uint8 image, got {a.dtype} {a.shape}")
        Image.fromarray(a).save(bio, format="png", compress_level=1)
    return bio.getvalue()


def save_png(path, rgb) -> None:
    """Write an RGB image or Figure to ``path`` as PNG, atomically."""
    from diffscreen.io.atomic import temporary_path

    data = to_png_bytes(rgb)
    with temporary_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
