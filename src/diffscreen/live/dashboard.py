"""The live dashboard: a web page that follows a screening run as it goes (issue 14, item 4).

The live loop (``diffscreen watch``, ``stream``) reports every decision to a
:class:`LiveStats`; :func:`serve` shows it on a page that updates every
second:

* the hit rate and the keep rate over time (one point a second) and the
  frames/s;
* the histogram of P(hit) + P(maybe) (the keep decision is at 0.5, Ke et al.
  2018 §2.1);
* the latest kept frames as thumbnails (downsampled by the maximum of each
  block, so that one-pixel Bragg spots survive, and log-scaled) with their
  Grad-CAM overlays (Selvaraju et al. 2017; Nawaz et al. 2022 §3.4), drawn by
  :func:`diffscreen.explain.overlay` as ``diffscreen explain`` and
  ``diffscreen report`` draw them;
* the errors and the dropped frames.

Grad-CAM is computed in the dashboard's own thread, never in the loop's, and
for **at most one kept frame a second** (``explain_interval_s``): on one core
the bundled default model takes about 0.1 s per 1920 × 1920 frame
(preprocessing 0.1 s, Grad-CAM 0.02 s), which at a few kept frames a second
would take a core from the screening.  Kept frames in between get a
thumbnail without an overlay.

The page is one HTML file with inline CSS and JavaScript (charts drawn on
``<canvas>`` by a few lines of plain JavaScript): nothing is fetched from
elsewhere, and its Content-Security-Policy forbids it.  It polls
``snapshot.json`` once a second.  It binds to 127.0.0.1 unless told
otherwise, and shows no file system path: a frame id or an error message
that holds an absolute path shows only the file's base name
(:func:`display_id`, :func:`scrub_paths`).

The server is Starlette under uvicorn, in a background thread.

Examples
--------
>>> stats = LiveStats(run="run0042")                                   # doctest: +SKIP
>>> with serve(stats, "127.0.0.1:8050", explainer=GradCamExplainer()) as dash:   # doctest: +SKIP
...     print("dashboard:", dash.url)
...     stats.frame("run0042_00001.cbf", True, "hit", {"p_hit": 0.9, "p_maybe": 0.05, "p_miss": 0.05}, pixels)
"""

from __future__ import annotations

import html
import json
import math
import re
import socket
import threading
import time
from collections import deque

import numpy as np

from diffscreen.errors import ConfigError

__all__ = ["LiveStats", "DashboardServer", "GradCamExplainer", "serve", "parse_bind", "display_id", "scrub_paths",
           "thumbnail_image", "render_page"]

#: Labels counted as such; any other label is counted under its own name too.
_KEEP_LABELS = ("hit", "maybe")

# ----------------------------------------------------------------- paths out
_WIN_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
# an absolute POSIX path (two or more components), a home path, or a Windows path, inside free text
_ABS_PATH = re.compile(
    r"(?<![\w.~])(?:~|[A-Za-z]:)?(?:[/\\][^\s/\\'\"(),;:<>|]+)*[/\\]([^\s/\\'\"(),;:<>|]+)"
)


def display_id(frame_id) -> str:
    """A frame id as the page shows it: no directory outside the run.

    Frame ids are given relative to the run (``run_0001.cbf``,
    ``sub/run.h5 //12``, ``run.cxi:/entry_1/data_1/data //3``).  When the
    file part is absolute (``/``, ``\\``, ``~``, ``C:\\``, ``file://``) or
    climbs out of the run (``..``), only the file's base name is kept, with
    what follows it (the HDF5 dataset after ``:/``, the frame number after
    `` //``).

    Parameters
    ----------
    frame_id : str
        The id the live loop gives (anything else is converted with ``str``).

    Returns
    -------
    str
        One printable line of at most 200 characters.

    Examples
    --------
    >>> display_id("/data/beamtime/run_0001.cbf //3")
    'run_0001.cbf //3'
    >>> display_id("sub/run.h5 //12")
    'sub/run.h5 //12'
    """
    s = str(frame_id).strip()
    if s.lower().startswith("file://"):
        s = s[7:]
    start = 3 if _WIN_DRIVE.match(s) else 0
    cut = len(s)
    for sep in (":/", " //"):  # the HDF5 dataset spec (file.h5:/path), CrystFEL's event (file //N)
        k = s.find(sep, start)
        if k != -1:
            cut = min(cut, k)
    file_part, rest = s[:cut], s[cut:]
    parts = re.split(r"[/\\]", file_part)
    outside = file_part.startswith(("/", "\\", "~")) or bool(_WIN_DRIVE.match(file_part)) or ".." in parts
    if outside:
        file_part = parts[-1] if parts[-1] else "frame"
    return _one_line(file_part + rest, 200)  # rest: the HDF5 dataset or the frame number, no file system path


def scrub_paths(text) -> str:
    """``text`` with every absolute file system path cut to its last component.

    For error messages, which may name the file they failed on
    (``cannot read /data/run/x.cbf: truncated`` → ``cannot read x.cbf:
    truncated``).  An HDF5 dataset path inside a message
    (``/entry_1/data_1/data``) is cut the same way, as no rule tells it from
    a file's.

    Parameters
    ----------
    text : str

    Returns
    -------
    str
        One printable line of at most 300 characters.
    """
    return _one_line(_ABS_PATH.sub(lambda m: m.group(1), str(text)), 300)


def _one_line(text: str, limit: int) -> str:
    out = "".join(c if c.isprintable() else " " for c in str(text))
    return out if len(out) <= limit else out[: limit - 1] + "…"


# ----------------------------------------------------------------- thumbnails
def _block_max(a: np.ndarray, f: int) -> np.ndarray:
    """(H, W) → (ceil(H/f), ceil(W/f)): the maximum of each f × f block (edge blocks padded with 0)."""
    if f <= 1:
        return a
    H, W = a.shape
    h, w = -(-H // f), -(-W // f)
    pad = np.zeros((h * f, w * f), dtype=np.float32)
    pad[:H, :W] = a
    return pad.reshape(h, f, w, f).max(axis=(1, 3))


def thumbnail_image(image, side: int = 160) -> np.ndarray:
    """A frame brought down to a thumbnail for display: block maxima, then log-scaled.

    Parameters
    ----------
    image : (H, W) array_like
        Pixels (ADU, any real dtype).  NaN, infinite and negative values
        count as 0.
    side : int
        Longest side of the result at most this (the frame is reduced by the
        smallest integer factor that fits; never enlarged).

    Returns
    -------
    (h, w) float32 ndarray
        ``log1p`` of the maximum of each block (a one-pixel Bragg spot keeps
        its peak, as in the bundled models' max-pooling); h, w ≤ ``side``.

    Raises
    ------
    BadFrameError
        ``image`` is not 2-D or is empty.
    ConfigError
        ``side`` < 8.
    """
    from diffscreen.errors import BadFrameError

    if side < 8:
        raise ConfigError(f"thumbnail side must be >= 8 pixels, got {side}")
    a = np.asarray(image, dtype=np.float32)
    if a.ndim != 2 or a.size == 0:
        raise BadFrameError(f"a frame must be a non-empty 2-D array (H, W), got shape {a.shape}")
    a = np.where(np.isfinite(a) & (a > 0), a, np.float32(0))
    f = max(1, -(-max(a.shape) // side))
    return np.log1p(_block_max(a, f)).astype(np.float32)


def _heat_for_thumb(heat, shape) -> np.ndarray:
    """An explainer's map (any (h, w) over the whole frame) resampled to the thumbnail's shape, in [0, 1]."""
    from diffscreen.errors import BadFrameError

    h = np.asarray(heat, dtype=np.float32)
    if h.ndim != 2 or h.size == 0:
        raise BadFrameError(f"the explainer returned shape {h.shape}, not a 2-D heat map")
    if not np.isfinite(h).all():
        raise BadFrameError("the explainer's heat map holds NaN or infinite values")
    h = np.clip(h, 0, 1)
    if h.shape == tuple(shape):
        return h
    from PIL import Image  # a matplotlib dependency; its resize filters over the whole footprint when shrinking

    im = Image.fromarray(h, mode="F").resize((shape[1], shape[0]), Image.BILINEAR)
    return np.clip(np.asarray(im, dtype=np.float32), 0, 1)


def _stretch(img: np.ndarray) -> np.ndarray:
    """Grey levels in [0, 1]: the median (the background) black, the 99.9th percentile white."""
    from diffscreen.explain import display_frame

    return display_frame(img, lo_pct=50.0, hi_pct=99.9)


def _grey_png(img: np.ndarray) -> bytes:
    from diffscreen.explain import to_png_bytes

    g = (_stretch(img) * 255 + 0.5).astype(np.uint8)
    return to_png_bytes(np.repeat(g[..., None], 3, axis=2))


def _overlay_png(img: np.ndarray, heat: np.ndarray) -> bytes:
    from diffscreen.explain import overlay, to_png_bytes

    return to_png_bytes(overlay(_stretch(img), heat, style="blend", alpha=0.45))


# ----------------------------------------------------------------- statistics
def _p_keep(scores) -> float | None:
    """P(hit) + P(maybe) from a frame's scores (``p_hit``/``hit`` keys; 1 − P(miss) when P(miss) is given)."""
    if not isinstance(scores, dict):
        return None

    def get(name):
        for key in (f"p_{name}", name):
            if key in scores:
                try:
                    v = float(scores[key])
                except (TypeError, ValueError):
                    return None
                return v if math.isfinite(v) else None
        return None

    miss = get("miss")
    if miss is not None:
        p = 1.0 - miss
    else:
        hit, maybe = get("hit"), get("maybe")
        if hit is None and maybe is None:
            return None
        p = (hit or 0.0) + (maybe or 0.0)
    return min(max(p, 0.0), 1.0)


class LiveStats:
    """What the dashboard shows, fed by the live loop; thread-safe.

    The loop calls :meth:`frame`, :meth:`error`, :meth:`dropped` and
    :meth:`rate` from its own thread; each takes a lock for a few
    microseconds and never raises on the data it is given (a display must not
    stop a screening), only on misuse (a negative count).  Thumbnails and
    Grad-CAM are drawn later by :meth:`render`, in the dashboard's thread.

    Parameters
    ----------
    run : str
        A name for the run, shown as the page's title (paths are cut to
        their last component).
    bins : int
        Bins of the P(hit) + P(maybe) histogram over [0, 1] (20: 0.05 wide;
        bin k holds k/bins ≤ p < (k+1)/bins, the last one also p = 1).
    bin_s : float
        Seconds per point of the time series.
    history : int
        Points of the time series kept (600 a second each: ten minutes).
    n_thumbs : int
        Kept frames shown (the latest).
    n_errors : int
        Error messages shown (the latest); all are counted.
    thumb_side : int
        Longest side of a thumbnail in pixels.
    clock : callable
        Seconds, monotonic (default :func:`time.monotonic`); tests pass their own.

    Raises
    ------
    ConfigError
        A size or interval that is not positive.
    """

    def __init__(self, run: str = "", *, bins: int = 20, bin_s: float = 1.0, history: int = 600, n_thumbs: int = 8,
                 n_errors: int = 20, thumb_side: int = 160, clock=time.monotonic):
        for name, v in (("bins", bins), ("history", history), ("n_thumbs", n_thumbs), ("n_errors", n_errors)):
            if int(v) != v or v < 1:
                raise ConfigError(f"{name} must be a whole number >= 1, got {v!r}")
        if not (bin_s > 0 and math.isfinite(bin_s)):
            raise ConfigError(f"bin_s must be a positive number of seconds, got {bin_s!r}")
        if thumb_side < 8:
            raise ConfigError(f"thumb_side must be >= 8 pixels, got {thumb_side}")
        self.run = display_id(run) if run else ""
        self.bins, self.bin_s, self.history = int(bins), float(bin_s), int(history)
        self.n_thumbs, self.thumb_side = int(n_thumbs), int(thumb_side)
        self._clock = clock
        self._lock = threading.Lock()
        self._t0 = clock()
        self._frames = 0
        self._kept = 0
        self._labels: dict[str, int] = {}
        self._hist = [0] * self.bins
        self._unscored = 0
        self._errors = 0
        self._dropped = 0
        self._rate: float | None = None
        self._series: deque = deque(maxlen=self.history)  # [bin index, frames, hits, kept, errors, dropped]
        self._recent_errors: deque = deque(maxlen=int(n_errors))
        self._pending: deque = deque(maxlen=self.n_thumbs)  # kept frames waiting for a thumbnail
        self._thumbs: deque = deque(maxlen=self.n_thumbs)  # drawn: dicts, newest last
        self._png: dict[str, bytes] = {}
        self._seq = 0
        self._explained = 0
        self._explain_failures = 0
        self._last_explained: float | None = None
        self._explain_note = ""
        self.changed = threading.Event()  # set when a kept frame waits to be drawn

    # -- called by the live loop -------------------------------------------
    def _bin(self, now: float) -> list:
        idx = int((now - self._t0) // self.bin_s)
        if not self._series or self._series[-1][0] != idx:
            self._series.append([idx, 0, 0, 0, 0, 0])
        return self._series[-1]

    def frame(self, frame_id: str, keep: bool, label: str, scores: dict, image=None) -> None:
        """Count one screened frame.

        Parameters
        ----------
        frame_id : str
            The frame's id, relative to the run (see :func:`display_id`).
        keep : bool
            Whether it was kept (goes to hits.lst).
        label : str
            ``"hit"``, ``"maybe"``, ``"miss"`` (any other label is counted under its name).
        scores : dict of str to float
            The frame's probabilities: ``p_hit``, ``p_maybe``, ``p_miss`` (or
            ``hit``, ``maybe``, ``miss``).  P(hit) + P(maybe) is 1 − P(miss)
            when P(miss) is given, else P(hit) + P(maybe); a frame without
            them (e.g. peakfinder8's ``n_peaks``) is counted but not put in
            the histogram (``unscored``).
        image : (H, W) float32 ndarray or None
            The pixels of a kept frame, for its thumbnail (ignored when
            ``keep`` is false).  Held by reference until drawn (at most
            ``n_thumbs`` frames): do not write into it afterwards.
        """
        p = _p_keep(scores)
        label = _one_line(label, 20) or "?"
        with self._lock:
            b = self._bin(self._clock())
            self._frames += 1
            self._labels[label] = self._labels.get(label, 0) + 1
            b[1] += 1
            if label == "hit":
                b[2] += 1
            if keep:
                self._kept += 1
                b[3] += 1
                if image is not None:
                    self._seq += 1
                    self._pending.append((self._seq, display_id(frame_id), label, p, image))
            if p is None:
                self._unscored += 1
            else:
                self._hist[min(int(p * self.bins), self.bins - 1)] += 1
        if keep and image is not None:
            self.changed.set()

    def error(self, frame_id: str, message: str) -> None:
        """Count a frame (or file) that could not be screened; its message is shown, paths cut."""
        entry = {"id": display_id(frame_id), "message": scrub_paths(message)}
        with self._lock:
            now = self._clock()
            self._errors += 1
            self._bin(now)[4] += 1
            entry["t"] = round(now - self._t0, 1)
            self._recent_errors.append(entry)

    def dropped(self, n: int) -> None:
        """Count ``n`` frames dropped (the buffer was full).

        Raises
        ------
        ConfigError
            ``n`` is negative or not a whole number.
        """
        if int(n) != n or n < 0:
            raise ConfigError(f"dropped frames must be a whole number >= 0, got {n!r}")
        with self._lock:
            self._dropped += int(n)
            self._bin(self._clock())[5] += int(n)

    def rate(self, frames_per_s: float) -> None:
        """The loop's current screening rate in frames/s (a non-finite value: unknown).

        Raises
        ------
        ConfigError
            A negative rate.
        """
        v = float(frames_per_s)
        if v < 0:
            raise ConfigError(f"frames/s must be >= 0, got {frames_per_s!r}")
        with self._lock:
            self._rate = v if math.isfinite(v) else None

    # -- read by the page ------------------------------------------------------
    def snapshot(self) -> dict:
        """The state the page shows, as JSON-able values.

        Returns
        -------
        dict
            ``run``; ``elapsed_s``; ``frames`` (screened), ``kept``,
            ``labels`` (count per label); ``hit_rate`` (frames labelled hit /
            frames) and ``keep_rate`` (kept / frames; what summary.json
            calls the hit rate, hit + maybe), None before the first frame;
            ``frames_per_s`` (the loop's last :meth:`rate`, else the frames
            of the last complete second, None before one has passed);
            ``errors``, ``dropped``; ``histogram`` (``edges`` (bins + 1),
            ``counts`` (bins), ``unscored``); ``series`` (``bin_s`` and, one
            entry a complete bin from the first on, the latest ``history``:
            ``t`` (s from the start, the bin's start), ``frames``,
            ``hit_rate``, ``keep_rate`` (None where no frame came),
            ``frames_per_s``, ``errors``, ``dropped``); ``thumbnails``
            (newest first: ``seq``, ``id``, ``label``, ``p_keep``, ``image``
            and ``gradcam``, relative URLs of PNGs or None, ``note``);
            ``recent_errors`` (newest first: ``id``, ``message``, ``t``);
            ``explained`` (Grad-CAM maps made), ``explain_note``.
        """
        with self._lock:
            now = self._clock()
            cur = int((now - self._t0) // self.bin_s)
            series = {k: [] for k in ("t", "frames", "hit_rate", "keep_rate", "frames_per_s", "errors", "dropped")}
            by_idx = {b[0]: b for b in self._series}
            first = max(self._series[0][0] if self._series else cur, cur - self.history)
            for i in range(first, cur):  # the complete bins: the current one would show a falling frames/s
                _, n, hits, kept, errs, drop = by_idx.get(i, (i, 0, 0, 0, 0, 0))
                series["t"].append(round(i * self.bin_s, 3))
                series["frames"].append(n)
                series["hit_rate"].append(hits / n if n else None)
                series["keep_rate"].append(kept / n if n else None)
                series["frames_per_s"].append(n / self.bin_s)
                series["errors"].append(errs)
                series["dropped"].append(drop)
            fps = self._rate
            if fps is None and cur >= 1:
                fps = by_idx.get(cur - 1, (0, 0))[1] / self.bin_s
            n = self._frames
            return {
                "run": self.run,
                "elapsed_s": round(now - self._t0, 1),
                "frames": n,
                "kept": self._kept,
                "labels": dict(sorted(self._labels.items())),
                "hit_rate": self._labels.get("hit", 0) / n if n else None,
                "keep_rate": self._kept / n if n else None,
                "frames_per_s": fps,
                "errors": self._errors,
                "dropped": self._dropped,
                "histogram": {"edges": [round(k / self.bins, 6) for k in range(self.bins + 1)],
                              "counts": list(self._hist), "unscored": self._unscored},
                "series": {"bin_s": self.bin_s, **series},
                "thumbnails": [dict(t) for t in reversed(self._thumbs)],
                "recent_errors": [dict(e) for e in reversed(self._recent_errors)],
                "explained": self._explained,
                "explain_note": self._explain_note,
            }

    def png(self, name: str) -> bytes | None:
        """The PNG behind a thumbnail URL (``thumb/12.png``, ``cam/12.png``), or None once it has gone."""
        with self._lock:
            return self._png.get(name)

    # -- drawing, in the dashboard's thread -----------------------------------
    def render(self, explainer=None, *, explain_interval_s: float = 1.0) -> int:
        """Draw the thumbnails of the kept frames that wait, and Grad-CAM for at most one of them.

        Grad-CAM (``explainer``) is computed for the newest waiting frame when
        ``explain_interval_s`` seconds have passed since the last one; the
        others get a thumbnail only.  An explainer that raises leaves a note
        on the page, never an exception.

        Parameters
        ----------
        explainer : callable, optional
            ``explainer(image) -> (h, w)`` heat map in [0, 1] over the whole
            frame (e.g. :class:`GradCamExplainer`); resampled to the
            thumbnail when its shape differs.
        explain_interval_s : float
            Least time between two Grad-CAM maps, in seconds.

        Returns
        -------
        int
            Thumbnails drawn.
        """
        with self._lock:  # the frames and the time they are taken at, together
            todo = list(self._pending)
            self._pending.clear()
            self.changed.clear()
            now = self._clock()
        if not todo:
            return 0
        due = explainer is not None and (
            self._last_explained is None or now - self._last_explained >= explain_interval_s)
        drawn = []
        for k, (seq, fid, label, p, image) in enumerate(todo):
            item = {"seq": seq, "id": fid, "label": label, "p_keep": p, "image": None, "gradcam": None, "note": ""}
            pngs = {}
            try:
                small = thumbnail_image(image, self.thumb_side)
                pngs[f"thumb/{seq}.png"] = _grey_png(small)
                item["image"] = f"thumb/{seq}.png"
            except Exception as exc:  # noqa: BLE001 - a frame that cannot be drawn is a note, not a failure
                item["note"] = "cannot draw: " + scrub_paths(exc)
                small = None
            if small is not None and explainer is not None:
                if due and k == len(todo) - 1:
                    self._last_explained = now
                    try:
                        heat = _heat_for_thumb(explainer(image), small.shape)
                        pngs[f"cam/{seq}.png"] = _overlay_png(small, heat)
                        item["gradcam"] = f"cam/{seq}.png"
                        with self._lock:
                            self._explained += 1
                    except Exception as exc:  # noqa: BLE001 - see the docstring
                        item["note"] = "Grad-CAM failed: " + scrub_paths(exc)
                        with self._lock:
                            self._explain_failures += 1
                            self._explain_note = f"Grad-CAM failed on {self._explain_failures} frame(s)"
                else:
                    every = "a second" if explain_interval_s == 1 else f"every {explain_interval_s:g} s"
                    item["note"] = f"no Grad-CAM (at most one kept frame {every})"
            drawn.append((item, pngs))
        with self._lock:
            for item, pngs in drawn:
                if len(self._thumbs) == self._thumbs.maxlen:
                    old = self._thumbs[0]
                    for key in (old["image"], old["gradcam"]):
                        self._png.pop(key, None)
                self._thumbs.append(item)
                self._png.update(pngs)
        return len(drawn)


# ----------------------------------------------------------------- Grad-CAM
class GradCamExplainer:
    """Grad-CAM of a screening model over a whole raw frame, for the dashboard's overlays.

    The frame is prepared as screening prepares it (the model's stored
    recipe, on the fast path: a beam-centred crop scaled to the network
    input), Grad-CAM of the predicted class is computed on that input
    (:func:`diffscreen.explain.attribute`, captum's ``LayerGradCam``,
    Selvaraju et al. 2017; Nawaz et al. 2022 §3.4, Eqs. 6–7) and put back
    where the crop came from, so that the map lies over the frame.

    Parameters
    ----------
    model : str, Path, ModelBundle or None
        Model file or bundled model name (``"default"``, ``"fast"``); None =
        the bundled default model.
    method : {"gradcam", "gradcam++"}
        The class-activation method.
    meta : FrameMeta, optional
        The run's geometry (beam centre, pixel size, distance, wavelength).
        Without it the crop is the centre of the frame, scaled as for a frame
        without geometry: the same crop that screening used only when the
        run's frames have no geometry either.

    Raises
    ------
    ModelFileError
        Missing or unreadable model file.
    ConfigError
        ``method`` is not a CAM method, or the model has no convolutional layer.

    Notes
    -----
    The pixel mask is not known here (all pixels count); about 0.1 s per
    1920 × 1920 frame on one core with the default model, which is why the
    dashboard explains at most one kept frame a second.
    """

    def __init__(self, model=None, *, method: str = "gradcam", meta=None):
        from diffscreen.explain import CAM_METHODS, find_cam_layer
        from diffscreen.io.frame import FrameMeta
        from diffscreen.models.inference import Classifier

        if method not in CAM_METHODS:
            raise ConfigError(f"the dashboard's overlays use a CAM method ({', '.join(CAM_METHODS)}), got {method!r}")
        self.clf = Classifier(model)
        self.method = method
        self.meta = meta if meta is not None else FrameMeta(source="live")
        find_cam_layer(self.clf.model)  # refuse a model without a convolutional layer now, not per frame
        self._lock = threading.Lock()

    def __call__(self, image) -> np.ndarray:
        """Grad-CAM of one frame.

        Parameters
        ----------
        image : (H, W) array_like
            Raw pixels (ADU).

        Returns
        -------
        (H, W) float32 ndarray
            The map, normalised to a maximum of 1 (all 0 when Grad-CAM is 0
            everywhere); 0 outside the crop the network saw.

        Raises
        ------
        BadFrameError
            Not 2-D, or pixels the recipe cannot prepare.
        """
        import torch
        import torch.nn.functional as F

        from diffscreen.errors import BadFrameError
        from diffscreen.explain import attribute
        from diffscreen.io.frame import Frame
        from diffscreen.preprocess.geometry import beam_centre, crop_window, zoom_factor

        data = np.asarray(image, dtype=np.float32)
        if data.ndim != 2 or data.size == 0:
            raise BadFrameError(f"a frame must be a non-empty 2-D array (H, W), got shape {data.shape}")
        data = np.where(np.isfinite(data), data, np.float32(0))
        frame = Frame(data, np.zeros(data.shape, bool), self.meta)
        with self._lock:
            x = self.clf.preprocess([frame])
            cam = attribute(self.clf.model, x, method=self.method)[0]
        cfg = self.clf.bundle.preprocess
        S = cam.shape[0]
        z = zoom_factor(self.meta, data.shape, s_per_px=cfg.s_per_px, fallback_size=cfg.fallback_size)
        side, x0, y0 = crop_window(beam_centre(self.meta, data.shape), z, S)
        win = F.interpolate(torch.from_numpy(np.ascontiguousarray(cam))[None, None], size=(side, side),
                            mode="bilinear", align_corners=False)[0, 0].numpy()
        H, W = data.shape
        out = np.zeros((H, W), np.float32)
        r0, c0 = max(y0, 0), max(x0, 0)
        r1, c1 = min(y0 + side, H), min(x0 + side, W)
        if r1 > r0 and c1 > c0:
            out[r0:r1, c0:c1] = win[r0 - y0:r1 - y0, c0 - x0:c1 - x0]
        out = np.clip(out, 0, None)
        m = float(out.max())
        return out / m if m > 0 else out


# ----------------------------------------------------------------- the server
def parse_bind(bind) -> tuple[str, int]:
    """``[HOST:]PORT`` → (host, port); the host defaults to 127.0.0.1.

    Accepts ``8050``, ``:8050``, ``127.0.0.1:8050``, ``0.0.0.0:8050`` (all
    interfaces: only when told), ``[::1]:8050``.  Port 0 picks a free port.

    Raises
    ------
    ConfigError
        Not of that form, or a port outside 0–65535.
    """
    s = str(bind).strip()
    m = re.fullmatch(r"(?:(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]*):)?(\d{1,5})", s)
    if not m:
        raise ConfigError(f"--dashboard takes [HOST:]PORT (e.g. 8050 or 127.0.0.1:8050), got {bind!r}")
    host = (m.group(1) or "127.0.0.1").strip("[]") or "127.0.0.1"
    port = int(m.group(2))
    if port > 65535:
        raise ConfigError(f"dashboard port must be 0-65535, got {port}")
    return host, port


class DashboardServer:
    """A running dashboard (from :func:`serve`).

    Attributes
    ----------
    url : str
        Where to open the page (``http://127.0.0.1:PORT/``).
    host : str
    port : int
        The port bound (the free one picked for port 0).
    stats : LiveStats
    """

    def __init__(self, stats, sock, host, explainer, explain_interval_s):
        import uvicorn

        self.stats = stats
        self.host = host
        self.port = sock.getsockname()[1]
        shown = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
        self.url = f"http://{'[' + shown + ']' if ':' in shown else shown}:{self.port}/"
        self._sock = sock
        self._stop = threading.Event()
        config = uvicorn.Config(_app(stats), log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="diffscreen-dashboard", daemon=True)
        self._drawer = threading.Thread(target=self._draw, args=(explainer, explain_interval_s),
                                        name="diffscreen-dashboard-draw", daemon=True)
        self._thread.start()
        end = time.monotonic() + 30
        while not self._server.started and self._thread.is_alive() and time.monotonic() < end:
            time.sleep(0.01)
        if not self._server.started:
            self.close()
            raise ConfigError(f"the dashboard's web server did not start on {self.url}")
        self._drawer.start()

    def _draw(self, explainer, interval):
        while not self._stop.is_set():
            self.stats.changed.wait(0.25)
            if self._stop.is_set():
                break
            try:
                self.stats.render(explainer, explain_interval_s=interval)
            except Exception:  # noqa: BLE001 - a drawing bug must not end the page's updates
                time.sleep(1.0)

    def close(self) -> None:
        """Stop serving and drawing (waits up to 5 s for the threads)."""
        self._stop.set()
        self.stats.changed.set()
        self._server.should_exit = True
        self._thread.join(timeout=5)
        if self._drawer.is_alive():
            self._drawer.join(timeout=5)
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def serve(stats: LiveStats, bind="127.0.0.1:0", *, explainer=None, explain_interval_s: float = 1.0) -> DashboardServer:
    """Serve the dashboard of ``stats`` from a background thread.

    Parameters
    ----------
    stats : LiveStats
        What the live loop feeds.
    bind : str or int
        ``[HOST:]PORT`` (:func:`parse_bind`); 127.0.0.1 unless a host is
        given; port 0 picks a free port (see ``.url``).
    explainer : callable, optional
        ``image (H, W) -> heat map (h, w)`` in [0, 1] for the kept frames'
        overlays, e.g. :class:`GradCamExplainer`; None: thumbnails only.
    explain_interval_s : float
        Least time between two Grad-CAM maps (default: one a second).

    Returns
    -------
    DashboardServer
        ``.url``, ``.close()``; also a context manager.

    Raises
    ------
    ConfigError
        A bad ``bind``, the address cannot be bound (port in use, host not
        on this machine), or the web server does not start within 30 s.
    """
    if not isinstance(stats, LiveStats):
        raise ConfigError(f"serve needs a LiveStats, got {type(stats).__name__}")
    if not (explain_interval_s >= 0):
        raise ConfigError(f"explain_interval_s must be >= 0, got {explain_interval_s!r}")
    host, port = parse_bind(bind)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
            sock.listen(64)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        raise ConfigError(f"cannot serve the dashboard on {host}:{port}: {exc.strerror or exc}; "
                          "choose another port (--dashboard PORT)") from None
    return DashboardServer(stats, sock, host, explainer, explain_interval_s)


def _app(stats: LiveStats):
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    headers = {
        "Cache-Control": "no-store",
        # nothing from elsewhere: the page's script and style are inline, images and data come from here
        "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                   "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'",
        "X-Content-Type-Options": "nosniff",
    }

    async def page(_request):
        return HTMLResponse(render_page(stats.snapshot()), headers=headers)

    async def snapshot(_request):
        return JSONResponse(stats.snapshot(), headers=headers)

    async def png(request):
        kind, seq = request.path_params["kind"], request.path_params["seq"]
        data = stats.png(f"{kind}/{seq}.png")
        if data is None:
            return Response(status_code=404, headers=headers)
        return Response(data, media_type="image/png", headers=headers)

    return Starlette(routes=[
        Route("/", page),
        Route("/snapshot.json", snapshot),
        Route("/{kind:str}/{seq:int}.png", png),
    ])


# ----------------------------------------------------------------- the page
def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _num(v, digits=0) -> str:
    return "–" if v is None else f"{v:,.{digits}f}"


def render_page(snap: dict) -> str:
    """The dashboard's HTML, with the numbers of ``snap`` (from :meth:`LiveStats.snapshot`) filled in.

    The page's script then polls ``snapshot.json`` every second and redraws.
    """
    e = html.escape
    values = {
        "RUN": e(snap.get("run") or "live run"),
        "FRAMES": _num(snap["frames"]),
        "KEPT": _num(snap["kept"]),
        "HIT_RATE": _pct(snap["hit_rate"]),
        "KEEP_RATE": _pct(snap["keep_rate"]),
        "FPS": _num(snap["frames_per_s"], 1),
        "ERRORS": _num(snap["errors"]),
        "DROPPED": _num(snap["dropped"]),
        "SNAPSHOT": json.dumps(snap).replace("<", "\\u003c"),  # nothing in it can close or open a tag
    }
    out = _PAGE
    for k, v in values.items():
        out = out.replace("{{" + k + "}}", v)
    return out


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>diffscreen live: {{RUN}}</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f4f5f7;color:#222}
header{background:#1f3a5f;color:#fff;padding:8px 16px;display:flex;justify-content:space-between;align-items:baseline}
header h1{font-size:18px;margin:0;font-weight:600}
#status{font-size:13px;opacity:.85}
main{padding:10px 16px}
.cards{display:flex;flex-wrap:wrap;gap:8px}
.card{background:#fff;border-radius:6px;padding:6px 12px;min-width:110px;box-shadow:0 1px 2px rgba(0,0,0,.12)}
.card .v{font-size:24px;font-weight:600;font-variant-numeric:tabular-nums}
.card .k{font-size:12px;color:#666}
.card.bad .v{color:#b3261e}
.row{display:flex;flex-wrap:wrap;gap:10px;margin-top:10px}
.panel{background:#fff;border-radius:6px;padding:6px 10px;box-shadow:0 1px 2px rgba(0,0,0,.12)}
.panel h2{font-size:14px;margin:2px 0 4px 0;color:#333}
.legend{font-size:12px;color:#555}
.legend b{display:inline-block;width:18px;height:3px;vertical-align:middle;margin:0 4px}
#gallery{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0;background:#fafafa;border:1px solid #ddd;border-radius:4px;padding:4px}
figure .pair{display:flex;gap:3px}
figure img,.nocam{width:120px;height:120px;image-rendering:pixelated;background:#000;display:block}
.nocam{color:#aaa;font-size:11px;display:flex;align-items:center;justify-content:center;text-align:center}
figcaption{font-size:11px;max-width:246px;overflow-wrap:anywhere}
#errlist{font-size:12px;margin:0;padding:0;list-style:none;max-height:320px;overflow:auto}
#errlist li{margin-bottom:3px;overflow-wrap:anywhere}
.note{font-size:11px;color:#666}
</style></head>
<body>
<header><h1>diffscreen live: <span id="run">{{RUN}}</span></h1><span id="status" data-polls="0">served page</span></header>
<main>
<div class="cards">
 <div class="card"><div class="v" id="frames">{{FRAMES}}</div><div class="k">frames screened</div></div>
 <div class="card"><div class="v" id="kept">{{KEPT}}</div><div class="k">kept (hit + maybe)</div></div>
 <div class="card"><div class="v" id="hit_rate">{{HIT_RATE}}</div><div class="k">hit rate</div></div>
 <div class="card"><div class="v" id="keep_rate">{{KEEP_RATE}}</div><div class="k">keep rate</div></div>
 <div class="card"><div class="v" id="fps">{{FPS}}</div><div class="k">frames/s</div></div>
 <div class="card" id="errors_card"><div class="v" id="errors">{{ERRORS}}</div><div class="k">errors</div></div>
 <div class="card" id="dropped_card"><div class="v" id="dropped">{{DROPPED}}</div><div class="k">dropped frames</div></div>
</div>
<div class="row">
 <div class="panel"><h2>Hit rate and keep rate, per second</h2>
  <canvas id="rates" width="470" height="170"></canvas>
  <div class="legend"><b style="background:#d62728"></b>hit rate <b style="background:#1f77b4"></b>keep rate</div></div>
 <div class="panel"><h2>Frames/s</h2><canvas id="fpschart" width="270" height="170"></canvas>
  <div class="legend"><b style="background:#2ca02c"></b>frames/s <b style="background:#b3261e"></b>dropped</div></div>
 <div class="panel"><h2>P(hit) + P(maybe)</h2><canvas id="hist" width="290" height="170"></canvas>
  <div class="legend">frames per bin (log scale); dashed: the keep threshold 0.5</div></div>
</div>
<div class="row">
 <div class="panel" style="flex:3 1 600px"><h2>Latest kept frames (left: log-scaled frame; right: Grad-CAM)</h2>
  <div id="gallery"></div>
  <p class="note" id="explain_note">Grad-CAM (Selvaraju et al. 2017) of the predicted class, computed for at most
  one kept frame a second; red: the regions that raised that class's score.</p></div>
 <div class="panel" style="flex:1 1 280px"><h2>Errors (the latest first)</h2><ul id="errlist"></ul></div>
</div>
</main>
<script id="initial" type="application/json">{{SNAPSHOT}}</script>
<script>
(function () {
"use strict";
var polls = 0, shownGallery = "";
function $(id) { return document.getElementById(id); }
function pct(v) { return v === null || v === undefined ? "\\u2013" : (100 * v).toFixed(1) + "%"; }
function num(v, d) { return v === null || v === undefined ? "\\u2013" :
  Number(v).toLocaleString("en-US", {minimumFractionDigits: d || 0, maximumFractionDigits: d || 0}); }
function axes(ctx, w, h, pad, ymax, ylab) {
  ctx.clearRect(0, 0, w, h); ctx.strokeStyle = "#999"; ctx.lineWidth = 1; ctx.beginPath();
  ctx.moveTo(pad, 4); ctx.lineTo(pad, h - 18); ctx.lineTo(w - 4, h - 18); ctx.stroke();
  ctx.fillStyle = "#555"; ctx.font = "10px sans-serif"; ctx.textAlign = "right";
  ctx.fillText(ylab(ymax), pad - 3, 12); ctx.fillText(ylab(0), pad - 3, h - 18);
}
function line(ctx, xs, ys, x0, x1, y0, y1, color) {
  ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.beginPath(); var on = false;
  for (var i = 0; i < ys.length; i++) {
    if (ys[i] === null) { on = false; continue; }
    var x = x0 + (x1 - x0) * xs[i], y = y0 - (y0 - y1) * ys[i];
    if (on) ctx.lineTo(x, y); else ctx.moveTo(x, y); on = true;
  }
  ctx.stroke();
}
function timeChart(id, s, keys, colors, scale, ylab) {
  var c = $(id), ctx = c.getContext("2d"), w = c.width, h = c.height, pad = 42, n = s.t.length;
  var ymax = 0;
  keys.forEach(function (k) { s[k].forEach(function (v) { if (v !== null && v > ymax) ymax = v; }); });
  ymax = scale(ymax);
  axes(ctx, w, h, pad, ymax, ylab);
  if (n === 0) return;
  var xs = s.t.map(function (_, i) { return n > 1 ? i / (n - 1) : 1; });
  ctx.textAlign = "left"; ctx.fillText("-" + Math.round(s.t[n - 1] - s.t[0]) + " s", pad + 2, h - 5);
  ctx.textAlign = "right"; ctx.fillText("now", w - 4, h - 5);
  keys.forEach(function (k, j) {
    line(ctx, xs, s[k].map(function (v) { return v === null ? null : v / ymax; }), pad, w - 4, h - 18, 4, colors[j]);
  });
}
function histogram(hist) {
  var c = $("hist"), ctx = c.getContext("2d"), w = c.width, h = c.height, pad = 34, n = hist.counts.length;
  var top = Math.max.apply(null, hist.counts.concat([1]));
  var lt = Math.log10(top + 1);
  axes(ctx, w, h, pad, top, function (v) { return v === 0 ? "0" : num(v); });
  var bw = (w - 4 - pad) / n;
  for (var i = 0; i < n; i++) {
    var v = hist.counts[i], bh = v > 0 ? (h - 22) * Math.log10(v + 1) / lt : 0;
    ctx.fillStyle = hist.edges[i] >= 0.5 ? "#1f77b4" : "#9aa5b1";
    ctx.fillRect(pad + i * bw + 1, h - 18 - bh, bw - 2, bh);
  }
  ctx.setLineDash([4, 3]); ctx.strokeStyle = "#333"; ctx.beginPath();
  ctx.moveTo(pad + (w - 4 - pad) / 2, 4); ctx.lineTo(pad + (w - 4 - pad) / 2, h - 18); ctx.stroke(); ctx.setLineDash([]);
  ctx.fillStyle = "#555"; ctx.textAlign = "center";
  ctx.fillText("0", pad, h - 5); ctx.fillText("0.5", pad + (w - 4 - pad) / 2, h - 5); ctx.fillText("1", w - 8, h - 5);
}
function gallery(thumbs) {
  var key = thumbs.map(function (t) { return t.seq + ":" + (t.gradcam || ""); }).join(",");
  if (key === shownGallery) return;
  shownGallery = key;
  var g = $("gallery"); g.textContent = "";
  if (thumbs.length === 0) { g.textContent = "No kept frame yet."; return; }
  thumbs.forEach(function (t) {
    var f = document.createElement("figure"), pair = document.createElement("div"); pair.className = "pair";
    if (t.image) { var im = document.createElement("img"); im.src = t.image; im.alt = "frame " + t.id; pair.appendChild(im); }
    if (t.gradcam) { var cm = document.createElement("img"); cm.src = t.gradcam; cm.alt = "Grad-CAM of " + t.id; pair.appendChild(cm); }
    else { var d = document.createElement("div"); d.className = "nocam"; d.textContent = t.note || "no Grad-CAM"; pair.appendChild(d); }
    var cap = document.createElement("figcaption");
    cap.textContent = t.id + ": " + t.label + (t.p_keep === null ? "" : ", P(hit)+P(maybe) " + t.p_keep.toFixed(2));
    f.appendChild(pair); f.appendChild(cap); g.appendChild(f);
  });
}
function errors(list) {
  var ol = $("errlist"); ol.textContent = "";
  list.forEach(function (e) {
    var li = document.createElement("li"); li.textContent = e.id + " (" + e.t + " s): " + e.message; ol.appendChild(li);
  });
}
function show(s) {
  $("run").textContent = s.run || "live run";
  $("frames").textContent = num(s.frames); $("kept").textContent = num(s.kept);
  $("hit_rate").textContent = pct(s.hit_rate); $("keep_rate").textContent = pct(s.keep_rate);
  $("fps").textContent = num(s.frames_per_s, 1);
  $("errors").textContent = num(s.errors); $("dropped").textContent = num(s.dropped);
  $("errors_card").className = s.errors > 0 ? "card bad" : "card";
  $("dropped_card").className = s.dropped > 0 ? "card bad" : "card";
  timeChart("rates", s.series, ["hit_rate", "keep_rate"], ["#d62728", "#1f77b4"],
            function (m) { return Math.min(1, Math.max(0.05, Math.ceil(m * 20) / 20)); },
            function (v) { return Math.round(100 * v) + "%"; });
  timeChart("fpschart", s.series, ["frames_per_s", "dropped"], ["#2ca02c", "#b3261e"],
            function (m) { return Math.max(1, m * 1.1); }, function (v) { return num(v); });
  histogram(s.histogram);
  gallery(s.thumbnails);
  errors(s.recent_errors);
  if (s.explain_note) $("explain_note").textContent = s.explain_note;
}
function poll() {
  fetch("snapshot.json", {cache: "no-store"}).then(function (r) { return r.json(); }).then(function (s) {
    show(s); polls += 1;
    var st = $("status"); st.setAttribute("data-polls", String(polls));
    st.textContent = "live, " + num(s.elapsed_s, 0) + " s since start";
  }).catch(function () { $("status").textContent = "connection lost; retrying"; })
    .then(function () { setTimeout(poll, 1000); });
}
show(JSON.parse($("initial").textContent));
poll();
})();
</script>
</body></html>
"""
