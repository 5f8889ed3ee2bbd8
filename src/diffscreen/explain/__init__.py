"""Why was a frame kept or thrown away?  Attribution maps, representation
inversion and t-SNE for every model of :mod:`diffscreen.models`.

Sources: Ke et al. (2018) §3.4, Figs. 10–11 (saliency, t-SNE); Nawaz et al.
(2022) §3.3–3.4, Eqs. 1–7 (inversion, Grad-CAM, Guided Grad-CAM);
Zimmermann et al. (2019) §6 with Chattopadhyay et al. (2018) (Grad-CAM++);
Xie et al. (2022) Fig. 9 (t-SNE).

Examples
--------
>>> from diffscreen.explain import attribute, overlay     # doctest: +SKIP
>>> maps = attribute(model, x, method="gradcam++")          # (N, S, S)
>>> rgb = overlay(x[0, 0], maps[0])                         # (S, S, 3) uint8
"""

from diffscreen.explain.attribution import (
    CAM_METHODS,
    METHODS,
    attribute,
    find_cam_layer,
    gradcam_pp_weights,
    saliency_mask,
)
from diffscreen.explain.inversion import Inversion, invert, invert_all, representation_layers
from diffscreen.explain.overlay import STYLES, display_frame, overlay, panel_grid, save_png, to_png_bytes
from diffscreen.explain.tsne import penultimate_features, tsne_embed, tsne_figure

__all__ = [
    "METHODS",
    "CAM_METHODS",
    "STYLES",
    "attribute",
    "find_cam_layer",
    "gradcam_pp_weights",
    "saliency_mask",
    "overlay",
    "display_frame",
    "panel_grid",
    "save_png",
    "to_png_bytes",
    "invert",
    "invert_all",
    "Inversion",
    "representation_layers",
    "penultimate_features",
    "tsne_embed",
    "tsne_figure",
]
