"""DIALS spot finding on one frame at a time, in a long-lived process run with DIALS's own Python.

This script is run by :class:`diffscreen.baselines.dials.DialsSpotFinder`
with the Python interpreter that has DIALS (Debian's ``python3-dials``:
``/usr/bin/python3``).  It imports only the standard library, NumPy and
DIALS / dxtbx / scitbx / libtbx, never diffscreen (whose environment cannot
import DIALS, and which this interpreter need not have).

Protocol: one JSON object per line on stdin, one JSON reply per line on
stdout (anything DIALS itself prints goes to stderr).

``{"op": "hello"}``
    Reply ``{"ok": true, "dials_version": ..., "defaults": {...}}``: the
    version and DIALS's own default settings (``dials.find_spots``'s PHIL).
``{"op": "find", "image": PATH, "valid": PATH, "spots": PATH, "settings": {...}}``
    ``image``: a ``.npy`` of (H, W) float64 pixel values, ADU;
    ``valid``: a ``.npy`` of (H, W) bool, True where the pixel may be used
    (DIALS's mask convention); ``spots``: where to write the spots found,
    a ``.npy`` of (P, 5) float64 rows ``x, y, intensity, variance, n_pixels``
    (x, y: DIALS's pixel coordinates, where pixel (0, 0) spans 0..1).
    Settings (all optional; missing = DIALS's default): ``gain`` (the
    detector's gain in ADU per photon: the image is divided by it, as dxtbx
    does with the gain its format states), ``algorithm``
    (``dispersion_extended`` or ``dispersion``), ``kernel_size`` [nx, ny],
    ``sigma_background``, ``sigma_strong``, ``min_local``,
    ``global_threshold``, ``min_spot_size`` (an int: DIALS's ``Auto`` depends
    on the detector type, which the caller knows), ``max_spot_size``,
    ``max_separation``, ``max_strong_pixel_fraction``.
    Reply ``{"ok": true, "n_spots": N, "n_strong": S, "max_strong": M}``
    (``M``: the strong-pixel count above which ``dials.find_spots`` stops
    with an error) or ``{"ok": false, "error": "one line"}``.
    With ``"geometry": {"beam_x", "beam_y", "pixel_size_mm", "distance_mm",
    "wavelength_A"}`` in the request (beam centre in DIALS's pixel
    convention), the reply also holds ``"per_image"``: DIALS's per-image
    analysis of the spots (:func:`per_image_stats`: ``estimated_d_min``, ...).
``{"op": "estimate_gain", "image": PATH, "valid": PATH, "kernel_size": [nx, ny]}``
    DIALS's own gain estimate of the image (``dials.estimate_gain``'s
    function ``dials.command_line.estimate_gain.estimate_gain``, run
    unchanged on the one image and its mask; ``kernel_size`` optional,
    DIALS's default 10, 10).  Reply ``{"ok": true, "gain": G}`` (ADU per
    photon) or ``{"ok": false, "error": "one line"}`` (DIALS's ``Sorry``
    when the index of dispersion has no spread).  See :func:`estimate_gain`.
``{"op": "quit"}``
    Exit.

What runs is DIALS's: the threshold is the spot-finding threshold extension
``dials.find_spots`` configures (``SpotFinderFactory.configure_threshold``:
the dispersion threshold of Parkhurst et al. 2016, *J. Appl. Cryst.* 49,
1912, by default its "extended" form), the strong pixels are labelled into
connected spots by DIALS's ``PixelListLabeller`` and
``PixelListShoeboxCreator`` (2-D, min/max spot size), and the spots are
filtered by the filter ``dials.find_spots`` configures
(``SpotFinderFactory.configure_filter``: the peak-to-centroid distance)
through DIALS's ``shoeboxes_to_reflection_table``; Winter et al. 2018,
*Acta Cryst.* D74, 85.  What does not run is dxtbx's reading of the file:
the caller sends pixels and a mask read by its own readers.
"""

from __future__ import annotations

import json
import math
import os
import sys
import traceback

# This file's folder holds diffscreen's ``dials.py``: never let it shadow DIALS's package
# (the caller also runs this script with ``python -I``, which leaves the folder off sys.path).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import numpy as np  # noqa: E402


def _protocol_stream():
    """The real stdout for replies; fd 1 then points at stderr, so nothing DIALS prints can break the protocol."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


_PHIL_KEYS = {
    "algorithm": "spotfinder.threshold.algorithm",
    "kernel_size": "spotfinder.threshold.dispersion.kernel_size",
    "sigma_background": "spotfinder.threshold.dispersion.sigma_background",
    "sigma_strong": "spotfinder.threshold.dispersion.sigma_strong",
    "min_local": "spotfinder.threshold.dispersion.min_local",
    "global_threshold": "spotfinder.threshold.dispersion.global_threshold",
    "min_spot_size": "spotfinder.filter.min_spot_size",
    "max_spot_size": "spotfinder.filter.max_spot_size",
    "max_separation": "spotfinder.filter.max_separation",
    "max_strong_pixel_fraction": "spotfinder.filter.max_strong_pixel_fraction",
}


class Worker:
    """DIALS's spot finder for frames sent as arrays; configured once per settings."""

    def __init__(self):
        import dials.util.version
        from dials.command_line.find_spots import phil_scope

        self.version = dials.util.version.dials_version()
        self.phil_scope = phil_scope
        self._configured = {}

    def defaults(self) -> dict:
        p = self.phil_scope.extract()
        s = p.spotfinder
        d = s.threshold.dispersion
        return {
            "algorithm": s.threshold.algorithm,
            "kernel_size": list(d.kernel_size),
            "sigma_background": d.sigma_background,
            "sigma_strong": d.sigma_strong,
            "min_local": d.min_local,
            "global_threshold": d.global_threshold,
            "gain": d.gain,
            "min_spot_size": str(s.filter.min_spot_size),
            "max_spot_size": s.filter.max_spot_size,
            "max_separation": s.filter.max_separation,
            "max_strong_pixel_fraction": s.filter.max_strong_pixel_fraction,
        }

    def _configure(self, settings: dict):
        """(params, threshold, filter) for these settings, as ``dials.find_spots`` builds them."""
        key = json.dumps({k: settings.get(k) for k in _PHIL_KEYS}, sort_keys=True)
        if key not in self._configured:
            from dials.algorithms.spot_finding.factory import SpotFinderFactory
            from dials.util.phil import parse

            lines = []
            for k, path in _PHIL_KEYS.items():
                v = settings.get(k)
                if v is None:
                    continue
                if k == "algorithm" and v not in ("dispersion", "dispersion_extended"):
                    raise ValueError(f"algorithm must be dispersion or dispersion_extended, not {v!r}")
                lines.append(f"{path} = {' '.join(str(x) for x in v) if isinstance(v, (list, tuple)) else v}")
            params = self.phil_scope.fetch(source=parse("\n".join(lines))).extract()
            if not isinstance(params.spotfinder.filter.min_spot_size, int):
                raise ValueError("min_spot_size must be given as an int (DIALS's Auto depends on the detector type)")
            threshold = SpotFinderFactory.configure_threshold(params)
            spot_filter = SpotFinderFactory.configure_filter(params)
            self._configured[key] = (params, threshold, spot_filter)
        return self._configured[key]

    def find(self, req: dict) -> dict:
        from dials.algorithms.spot_finding.finder import shoeboxes_to_reflection_table
        from dials.array_family import flex
        from dials.model.data import PixelList, PixelListLabeller

        settings = req.get("settings") or {}
        params, threshold, spot_filter = self._configure(settings)
        image = np.load(req["image"]).astype(np.float64, copy=False)
        valid = np.load(req["valid"]).astype(bool, copy=False)
        if image.ndim != 2 or valid.shape != image.shape:
            raise ValueError(f"image {image.shape} and mask {valid.shape} must be one 2-D shape")
        gain = settings.get("gain")
        if gain is not None:
            gain = float(gain)
            if not (math.isfinite(gain) and gain > 0):
                raise ValueError(f"gain must be a positive number, not {gain!r}")
            if gain != 1.0:
                image = image / gain  # dxtbx's corrected data: (raw - pedestal) / gain
        im = flex.double(np.ascontiguousarray(image))
        mk = flex.bool(np.ascontiguousarray(valid))
        # The threshold, labelling and filter dials.find_spots uses on a 2-D (still) image.
        strong = threshold.compute_threshold(im, mk)
        plist = PixelList(0, im, strong)
        n_strong = len(plist)
        f = params.spotfinder.filter
        max_strong = int(math.ceil(f.max_strong_pixel_fraction * image.size))
        labeller = PixelListLabeller()
        labeller.add(plist)
        rows = np.zeros((0, 5))
        if n_strong:
            creator = flex.PixelListShoeboxCreator(labeller, 0, 0, True, f.min_spot_size, f.max_spot_size, False)
            shoeboxes = creator.result()
            shoeboxes = shoeboxes.select(shoeboxes.is_allocated())
            refl = shoeboxes_to_reflection_table(None, shoeboxes, spot_filter)
            if len(refl):
                x, y, _ = refl["xyzobs.px.value"].parts()
                sizes = refl["shoebox"].count_mask_values(1 << 0)  # MaskCode.Valid
                rows = np.stack([x.as_numpy_array(), y.as_numpy_array(),
                                 refl["intensity.sum.value"].as_numpy_array(),
                                 refl["intensity.sum.variance"].as_numpy_array(),
                                 np.asarray(sizes, dtype=np.float64)], axis=1)
        np.save(req["spots"], rows)
        reply = {"ok": True, "n_spots": int(len(rows)), "n_strong": int(n_strong), "max_strong": max_strong,
                 "min_spot_size": int(f.min_spot_size)}
        if req.get("geometry"):
            reply["per_image"] = per_image_stats(refl if len(rows) else None, req["geometry"])
        return reply


class _OneImage:
    """The part of a dxtbx ``ImageSet`` that ``dials.estimate_gain`` reads: one image of one panel and its mask."""

    def __init__(self, image, valid):
        from dials.array_family import flex

        self._data = (flex.double(np.ascontiguousarray(image, dtype=np.float64)),)
        self._mask = (flex.bool(np.ascontiguousarray(valid, dtype=bool)),)

    def __len__(self):
        return 1

    def get_detector(self):
        return [None]  # one panel: estimate_gain only takes its length

    def get_raw_data(self, index):
        return self._data

    def get_mask(self, index):
        return self._mask


def estimate_gain(req: dict) -> dict:
    """DIALS's gain estimate (``dials.estimate_gain``) of one image read by the caller's readers.

    ``dials.command_line.estimate_gain.estimate_gain`` runs unchanged on a
    one-image stand-in for the ``ImageSet`` dxtbx would give it: DIALS's
    ``DispersionThresholdDebug`` computes each pixel's index of dispersion
    (variance / mean over a (2nx+1) × (2ny+1) window of valid pixels, gain
    1), and the estimate is the median of the values inside the Tukey fences
    (1.5 × IQR) of their distribution.  The image is the caller's pixels
    (ADU, as its readers read them) and the mask its mask, where dxtbx would
    give the raw data and the format's trusted-range mask.
    """
    from dials.command_line.estimate_gain import estimate_gain as dials_estimate_gain

    image = np.load(req["image"]).astype(np.float64, copy=False)
    valid = np.load(req["valid"]).astype(bool, copy=False)
    if image.ndim != 2 or valid.shape != image.shape:
        raise ValueError(f"image {image.shape} and mask {valid.shape} must be one 2-D shape")
    ks = req.get("kernel_size") or [10, 10]
    kernel = (int(ks[0]), int(ks[1]))
    gain = float(dials_estimate_gain(_OneImage(image, valid), kernel_size=kernel))
    return {"ok": True, "gain": gain, "kernel_size": list(kernel)}


def per_image_stats(refl, geometry: dict) -> dict:
    """DIALS's per-image analysis of the spots (``dials.algorithms.spot_finding.per_image_analysis``).

    ``geometry``: ``beam_x``, ``beam_y`` (px, DIALS's convention: pixel (0, 0)
    spans 0..1), ``pixel_size_mm``, ``distance_mm``, ``wavelength_A`` of a flat
    detector normal to the beam.  Each spot's reciprocal-lattice point
    ``rlp = s1 - s0`` is computed from its centroid as ``dials.find_spots``'s
    per-image analysis has it (``map_centroids_to_reciprocal_space``), then
    ``stats_for_reflection_table`` gives ``estimated_d_min`` (-1 with 10
    spots or fewer off the ice rings), the DISTL d_min estimates and the ice-ring filtered count.
    """
    from dials.algorithms.spot_finding.per_image_analysis import stats_for_reflection_table
    from dials.array_family import flex

    if refl is None or not len(refl):
        return {"n_spots_total": 0, "n_spots_no_ice": 0, "estimated_d_min": -1.0, "d_min_distl_method_1": -1.0,
                "d_min_distl_method_2": -1.0}
    g = {k: float(geometry[k]) for k in ("beam_x", "beam_y", "pixel_size_mm", "distance_mm", "wavelength_A")}
    x, y, _ = refl["xyzobs.px.value"].parts()
    dx = (x.as_numpy_array() - g["beam_x"]) * g["pixel_size_mm"]
    dy = (y.as_numpy_array() - g["beam_y"]) * g["pixel_size_mm"]
    dz = np.full(dx.shape, g["distance_mm"])
    norm = np.sqrt(dx * dx + dy * dy + dz * dz)
    inv = 1.0 / g["wavelength_A"]
    rlp = np.stack([dx / norm * inv, dy / norm * inv, dz / norm * inv - inv], axis=1)
    refl["rlp"] = flex.vec3_double(*(flex.double(np.ascontiguousarray(rlp[:, k])) for k in range(3)))
    st = stats_for_reflection_table(refl)
    return {"n_spots_total": int(st.n_spots_total), "n_spots_no_ice": int(st.n_spots_no_ice),
            "estimated_d_min": float(st.estimated_d_min), "d_min_distl_method_1": float(st.d_min_distl_method_1),
            "d_min_distl_method_2": float(st.d_min_distl_method_2)}


def main() -> int:
    out = _protocol_stream()
    try:
        worker = Worker()
    except Exception as exc:  # noqa: BLE001 - say why DIALS cannot be used, then stop
        out.write(json.dumps({"ok": False, "error": f"cannot import DIALS: {type(exc).__name__}: {exc}"}) + "\n")
        return 1
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
            op = req.get("op")
            if op == "quit":
                break
            if op == "hello":
                reply = {"ok": True, "dials_version": worker.version, "defaults": worker.defaults()}
            elif op == "find":
                reply = worker.find(req)
            elif op == "estimate_gain":
                reply = estimate_gain(req)
            else:
                reply = {"ok": False, "error": f"unknown op {op!r}"}
        except Exception as exc:  # noqa: BLE001 - one frame's failure is its problem, the worker goes on
            traceback.print_exc(file=sys.stderr)
            text = str(exc).strip().splitlines()
            reply = {"ok": False, "error": f"{type(exc).__name__}: {text[0] if text else 'no message'}"}
        out.write(json.dumps(reply) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
