"""DIALS's spot finder (``dials.find_spots``) as a hit-finder: the peer of Ke et al. (2018).

Ke et al. (2018, §3.3.1) labelled frames by the spots DIALS finds (Winter et
al. 2018, *Acta Cryst.* D74, 85): 10 or more spots a *hit*, 4 to 9 a
*maybe*, fewer a *miss*.  :class:`DialsSpotFinder` screens with exactly that
rule, as fixed numbers (never tuned on any frames), on the spots found by
DIALS's own code:

* the threshold ``dials.find_spots`` uses by default, the dispersion
  threshold of Parkhurst et al. (2016, *J. Appl. Cryst.* 49, 1912) in its
  "extended" form (``dispersion_extended``; a 7 × 7 kernel, i.e. half-size
  3 × 3, σ_background 6, σ_strong 3, min_local 2, global threshold 0);
* DIALS's connected-pixel labelling (``PixelListLabeller``,
  ``PixelListShoeboxCreator``, 2-D) with its size limits (``min_spot_size``
  ``Auto``: 3 pixels on a pixel-array detector, 6 on any other;
  ``max_spot_size`` 1000);
* DIALS's spot filter (peak-to-centroid distance at most 2 px).

Frames are read by diffscreen's readers, so every format diffscreen reads can
be screened (dxtbx reads only some of them), with diffscreen's masks (panel
gaps, bad and saturated pixels; dxtbx masks values outside the detector's
trusted range the same way).  The pixels and the mask go to a long-lived
worker process run with the Python that has DIALS (Debian's
``python3-dials``; our environment cannot import it):
``diffscreen/baselines/dials_worker.py``, which imports only DIALS and NumPy.
On the Pilatus frame ``tests/data/run2_1_00148.cbf.bz2`` this finds the same
248 spots as ``dials.import`` + ``dials.find_spots`` on the file.

Differences from ``dials.find_spots`` on a file dxtbx reads:

* the gain: dxtbx divides the pixels by the gain its format states (1 for
  pixel-array detectors; a guess for some CCDs, e.g. ADSC); here it is
  ``DialsConfig.gain`` (``screen --dials-gain``) when given, else a gain the
  reader records in ``meta.extra["gain"]``, else 1, DIALS's default;
* ``min_spot_size`` ``Auto`` needs the detector type: a pixel-array detector
  is recognised by name (Pilatus, Eiger, JUNGFRAU, CSPAD, ...); a frame
  whose file names no detector gets 6;
* ``dials.find_spots`` stops with an error when more than 25 % of an image's
  pixels are strong (``max_strong_pixel_fraction``); here the frame is
  classified all the same, with a ``warning:`` row in errors.csv.

Outputs are those of peakfinder8 as a method: scores.csv holds ``n_spots``
(the spots DIALS keeps) and ``n_strong_pixels`` (its strong pixels), and
hits.cxi the spots (x, y, summed intensity, I/σ(I)), x and y in diffscreen's
pixel convention (pixel centres at integers; DIALS's coordinates less 0.5).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import weakref
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from diffscreen.errors import EXIT_RUN, ConfigError, DiffscreenError
from diffscreen.io.frame import Frame

__all__ = ["DialsConfig", "DialsSpotFinder", "DialsError", "find_dials_python", "is_pixel_array_detector",
           "dials_finder", "ENV_PYTHON", "INSTALL_HINT"]

#: Environment variable naming the Python interpreter that imports dials.
ENV_PYTHON = "DIFFSCREEN_DIALS_PYTHON"
#: What to do when DIALS is missing (the one line ``screen --method dials`` prints).
INSTALL_HINT = ("DIALS is not installed: apt-get install python3-dials "
                f"(or set {ENV_PYTHON} to a Python that imports dials)")
WORKER_SCRIPT = Path(__file__).with_name("dials_worker.py")

#: Detector names of hybrid pixel-array detectors (DIALS's ``SENSOR_PAD``: ``min_spot_size`` Auto = 3).
_PAD_NAME = re.compile(r"pilatus|eiger|jungfrau|cs[ -]?pad|epix|agipd|lpd|dssc|mythen|lambda|medipix|timepix|"
                       r"merlin|pimega|mönch|moench|\bpad\b", re.IGNORECASE)


class DialsError(DiffscreenError):
    """DIALS failed on a frame, or its worker process died."""

    exit_status = EXIT_RUN


def is_pixel_array_detector(name: str | None) -> bool:
    """Whether a detector name (``FrameMeta.detector``) is a hybrid pixel-array detector.

    DIALS resolves ``min_spot_size = Auto`` to 3 pixels when the panel type
    is ``SENSOR_PAD`` and to 6 otherwise (``dials/array_family/flex_ext.py``).

    Parameters
    ----------
    name : str or None
        E.g. ``"PILATUS 6M"``, ``"CS PAD"``, ``"MarCCD"``; None (unknown) is not one.
    """
    return bool(name) and _PAD_NAME.search(name) is not None


@dataclass(frozen=True)
class DialsConfig:
    """DIALS spot-finding settings (``dials.find_spots``'s defaults) and the hit rule (Ke et al. 2018 §3.3.1).

    Attributes
    ----------
    gain : float or None
        Detector gain, ADU per photon; the pixels are divided by it before
        thresholding, as dxtbx does.  None: the frame's
        ``meta.extra["gain"]`` when its reader records one, else 1.
    algorithm : {"dispersion_extended", "dispersion"}
        DIALS's threshold (Parkhurst et al. 2016); DIALS's default is the extended one.
    kernel_size : (int, int)
        Kernel half-size (nx, ny): a (2nx+1) × (2ny+1) window, px.
    sigma_background, sigma_strong : float
        Index-of-dispersion and signal cut-offs, in standard deviations.
    min_local : int
        Fewest unmasked pixels under the kernel for a pixel to be thresholded.
    global_threshold : float
        Pixels below this value (photons) are background.
    min_spot_size : int or None
        Fewest connected strong pixels in a spot; None: DIALS's ``Auto``
        (3 on a pixel-array detector, :func:`is_pixel_array_detector`, else 6).
    max_spot_size : int
        Most connected strong pixels in a spot.
    max_separation : float
        Largest distance between a spot's brightest pixel and its centroid, px.
    max_strong_pixel_fraction : float
        Above this fraction of strong pixels ``dials.find_spots`` stops;
        here the frame gets a warning.
    hit_spots, maybe_spots : int
        A frame with at least ``hit_spots`` spots is a hit, with at least
        ``maybe_spots`` a maybe, else a miss (Ke: 10 and 4).  Fixed rules.
    """

    gain: float | None = None
    algorithm: str = "dispersion_extended"
    kernel_size: tuple = (3, 3)
    sigma_background: float = 6.0
    sigma_strong: float = 3.0
    min_local: int = 2
    global_threshold: float = 0.0
    min_spot_size: int | None = None
    max_spot_size: int = 1000
    max_separation: float = 2.0
    max_strong_pixel_fraction: float = 0.25
    hit_spots: int = 10
    maybe_spots: int = 4

    def __post_init__(self):
        if self.gain is not None and not (_finite(self.gain) and self.gain > 0):
            raise ConfigError(f"DIALS: gain must be a positive number, not {self.gain!r}")
        if self.algorithm not in ("dispersion_extended", "dispersion"):
            raise ConfigError(f"DIALS: algorithm must be dispersion_extended or dispersion, not {self.algorithm!r}")
        ks = tuple(self.kernel_size)
        if len(ks) != 2 or not all(isinstance(k, int) and k >= 1 for k in ks):
            raise ConfigError(f"DIALS: kernel_size must be two integers >= 1, not {self.kernel_size!r}")
        object.__setattr__(self, "kernel_size", ks)
        if not (self.sigma_background > 0 and self.sigma_strong > 0):
            raise ConfigError("DIALS: sigma_background and sigma_strong must be > 0")
        if self.min_spot_size is not None and self.min_spot_size < 1:
            raise ConfigError("DIALS: min_spot_size must be >= 1")
        if self.max_spot_size < max(1, self.min_spot_size or 1):
            raise ConfigError("DIALS: max_spot_size must be >= min_spot_size")
        if self.max_separation < 0 or not 0 < self.max_strong_pixel_fraction <= 1:
            raise ConfigError("DIALS: need max_separation >= 0 and 0 < max_strong_pixel_fraction <= 1")
        if not 1 <= self.maybe_spots <= self.hit_spots:
            raise ConfigError("DIALS: need 1 <= maybe_spots <= hit_spots")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kernel_size"] = list(self.kernel_size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DialsConfig":
        """Build from a dict (e.g. a settings JSON); unknown keys raise ConfigError."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"DIALS: unknown settings {sorted(unknown)}")
        try:
            return cls(**d)
        except TypeError as exc:
            raise ConfigError(f"DIALS: bad settings ({exc})") from None


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError, OverflowError):
        return False


def _shebang_python(script: str) -> str | None:
    """The interpreter named by a script's ``#!`` line (``#!/usr/bin/env python3`` resolved on PATH)."""
    try:
        with open(script, "rb") as f:
            first = f.readline(512).decode("utf-8", "replace").strip()
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    parts = first[2:].split()
    if not parts:
        return None
    if Path(parts[0]).name == "env" and len(parts) > 1:
        return shutil.which(parts[1])
    return parts[0]


def find_dials_python() -> str:
    """The Python interpreter that imports DIALS.

    In order: the environment variable ``DIFFSCREEN_DIALS_PYTHON``;
    ``dials.python`` on the PATH (a DIALS bundle); the interpreter of
    ``dials.find_spots`` (Debian's ``python3-dials``: ``/usr/bin/python3``).

    Returns
    -------
    str
        Path of the interpreter (not yet checked to import dials).

    Raises
    ------
    ConfigError
        None found, or the variable names no executable file.
    """
    env = os.environ.get(ENV_PYTHON)
    if env:
        exe = shutil.which(env)
        if exe is None:
            raise ConfigError(f"{ENV_PYTHON}={env} is not an executable Python; {INSTALL_HINT}")
        return exe
    exe = shutil.which("dials.python")
    if exe:
        return exe
    script = shutil.which("dials.find_spots")
    exe = _shebang_python(script) if script else None
    if exe and shutil.which(exe):
        return shutil.which(exe)
    raise ConfigError(INSTALL_HINT)


def _worker_env() -> dict:
    """The environment for DIALS's Python: without ours (PYTHONPATH, PYTHONHOME, a virtual environment's PATH)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP",
                                                            "VIRTUAL_ENV", "PYTHONSAFEPATH")}
    env["PYTHONNOUSERSITE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _stop(proc, tmp, err) -> None:
    """Ask the worker to quit, then make sure it has; remove its folder."""
    try:
        if proc.poll() is None:
            try:
                proc.stdin.write('{"op": "quit"}\n')
                proc.stdin.flush()
                proc.wait(timeout=5)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait(timeout=5)
    finally:
        for s in (proc.stdin, proc.stdout, err):
            try:
                s.close()
            except (OSError, ValueError):
                pass
        tmp.cleanup()


class _Worker:
    """One ``dials_worker.py`` process and its temporary folder."""

    def __init__(self, python: str):
        self.pid = os.getpid()
        self.tmp = tempfile.TemporaryDirectory(prefix="diffscreen-dials-")
        d = Path(self.tmp.name)
        self.paths = {"image": str(d / "image.npy"), "valid": str(d / "valid.npy"), "spots": str(d / "spots.npy")}
        self.err_path = d / "worker.log"
        self.err = open(self.err_path, "w+")
        try:
            self.proc = subprocess.Popen([python, "-I", "-u", str(WORKER_SCRIPT)], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self.err, text=True, env=_worker_env(),
                                         cwd=d)  # fmt: skip
        except OSError as exc:
            self.err.close()
            self.tmp.cleanup()
            raise ConfigError(f"cannot run {python} ({exc.strerror}); {INSTALL_HINT}") from None
        self._finalizer = weakref.finalize(self, _stop, self.proc, self.tmp, self.err)

    def alive(self) -> bool:
        return self.pid == os.getpid() and self.proc.poll() is None

    def _log_tail(self) -> str:
        try:
            lines = [ln.strip() for ln in self.err_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1][:300] if lines else ""

    def ask(self, request: dict) -> dict:
        """Send one request, return the reply.

        Raises
        ------
        DialsError
            The worker died or answered something that is not a reply.
        """
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (OSError, ValueError):
            line = ""
        if not line:
            self.proc.wait(timeout=10)
            tail = self._log_tail()
            raise DialsError(f"the DIALS worker stopped (exit status {self.proc.returncode})"
                             + (f": {tail}" if tail else ""))
        try:
            return json.loads(line)
        except ValueError:
            raise DialsError(f"the DIALS worker answered {line.strip()[:120]!r}") from None

    def close(self) -> None:
        self._finalizer()


class DialsSpotFinder:
    """DIALS's spot finder as a hit/maybe/miss screening method (Ke et al. 2018 §3.3.1 thresholds).

    Parameters
    ----------
    config : DialsConfig, optional
    python : str, optional
        The Python that imports DIALS; default :func:`find_dials_python`.

    Raises
    ------
    ConfigError
        DIALS is not installed (the message says ``apt-get install
        python3-dials``), or its Python cannot import it.

    Notes
    -----
    The worker process starts here (about 1 s, DIALS's imports), serves every
    frame of the run, and stops with :meth:`close`, at exit, or when the
    object is collected.  It is restarted if it dies (the frames it was
    working on are ``error`` rows) or in a forked child.

    Examples
    --------
    >>> with DialsSpotFinder() as finder:                       # doctest: +SKIP
    ...     spots = finder.find_spots(frame)
    ...     spots["n_spots"], finder.label(spots["n_spots"])
    """

    #: labels a spot count can give (Ke et al. 2018 §2.1)
    class_names = ("hit", "maybe", "miss")
    #: scores.csv columns
    score_columns = ("n_spots", "n_strong_pixels")

    def __init__(self, config: DialsConfig | None = None, *, python: str | None = None):
        self.config = config or DialsConfig()
        self.python = python or find_dials_python()
        self._worker = None
        self._running()  # DIALS missing: one line, before any output
        self.dials_version = self._hello.get("dials_version", "DIALS ?")
        self.dials_defaults = self._hello.get("defaults", {})

    # --- the worker ------------------------------------------------------------------
    def _running(self) -> _Worker:
        """The worker process, started (and DIALS's import checked) if there is none in this process."""
        w = self._worker
        if w is not None and w.alive():
            return w
        w = _Worker(self.python)
        try:
            reply = w.ask({"op": "hello"})
        except DialsError as exc:
            w.close()
            raise ConfigError(f"{INSTALL_HINT} ({self.python}: {exc.problem})") from None
        if not reply.get("ok"):
            w.close()
            raise ConfigError(f"{INSTALL_HINT} ({self.python}: {reply.get('error', 'no reply')})")
        self._worker, self._hello = w, reply
        return w

    def close(self) -> None:
        """Stop the worker process (a later frame starts a new one)."""
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_worker"] = None  # a process does not travel; the copy starts its own
        return state

    # --- per frame ---------------------------------------------------------------------
    def gain_of(self, frame: Frame) -> float:
        """The gain used for a frame, ADU per photon: the setting, else ``meta.extra["gain"]``, else 1."""
        if self.config.gain is not None:
            return float(self.config.gain)
        g = frame.meta.extra.get("gain")
        return float(g) if _finite(g) and float(g) > 0 else 1.0

    def min_spot_size_of(self, frame: Frame) -> int:
        """``min_spot_size`` for a frame: the setting, else DIALS's ``Auto`` (3 on a pixel-array detector, else 6)."""
        if self.config.min_spot_size is not None:
            return int(self.config.min_spot_size)
        return 3 if is_pixel_array_detector(frame.meta.detector) else 6

    def settings_for(self, frame: Frame) -> dict:
        """The settings sent to the worker for one frame (``dials_worker.py``)."""
        c = self.config.to_dict()
        for k in ("hit_spots", "maybe_spots"):
            c.pop(k)
        c["gain"] = self.gain_of(frame)
        c["min_spot_size"] = self.min_spot_size_of(frame)
        return c

    def find_spots(self, frame: Frame, per_image: bool = False) -> dict:
        """DIALS's spots on one frame.

        Parameters
        ----------
        frame : Frame
            ``data`` (H, W) float32, ADU; ``mask`` (H, W) bool, True = bad
            (never part of a spot, nor of a background window).
        per_image : bool
            Also run DIALS's per-image analysis on the spots
            (``dials.algorithms.spot_finding.per_image_analysis``, with the
            frame's geometry): the result's ``per_image`` dict holds its
            ``estimated_d_min`` (Å; -1 with 10 spots or fewer), the DISTL
            estimates and ``n_spots_no_ice``; None when the frame has no geometry.

        Returns
        -------
        dict
            ``n_spots`` (int), ``n_strong_pixels`` (int), ``max_strong``
            (int, ``dials.find_spots``'s limit on strong pixels),
            ``min_spot_size`` (int, as used), ``gain`` (float), ``x``, ``y``
            ((P,) float64 centroids, px, pixel centres at integers),
            ``intensity``, ``variance`` ((P,) float64 summed intensity and its
            variance, photons), ``n_pixels`` ((P,) int).

        Raises
        ------
        DialsError
            DIALS failed on the frame (one line, from DIALS) or the worker died.
        """
        settings = self.settings_for(frame)
        w = self._running()
        np.save(w.paths["image"], np.ascontiguousarray(frame.data, dtype=np.float32))
        np.save(w.paths["valid"], ~np.asarray(frame.mask, dtype=bool))
        request = {"op": "find", **w.paths, "settings": settings}
        geometry = _dials_geometry(frame) if per_image else None
        if geometry is not None:
            request["geometry"] = geometry
        reply = w.ask(request)
        if not reply.get("ok"):
            raise DialsError(f"DIALS: {reply.get('error', 'no reply')}")
        rows = np.load(w.paths["spots"]).reshape(-1, 5)
        return {"n_spots": int(reply["n_spots"]), "n_strong_pixels": int(reply["n_strong"]),
                "max_strong": int(reply["max_strong"]), "min_spot_size": int(reply["min_spot_size"]),
                "gain": settings["gain"], "x": rows[:, 0] - 0.5, "y": rows[:, 1] - 0.5, "intensity": rows[:, 2],
                "variance": rows[:, 3], "n_pixels": rows[:, 4].astype(int),
                **({"per_image": reply.get("per_image")} if per_image else {})}  # fmt: skip

    def estimate_gain(self, frame: Frame, kernel_size: tuple = (10, 10)) -> float:
        """DIALS's own estimate of the frame's gain (``dials.estimate_gain``), ADU per photon.

        Runs ``dials.command_line.estimate_gain.estimate_gain`` in the worker,
        unchanged, on this frame's pixels and mask (``dials_worker.py``'s
        ``estimate_gain``): the median index of dispersion (variance / mean
        over a (2nx+1) × (2ny+1) window) of the pixels inside the Tukey fences
        of its distribution.  For a Poisson background recorded at g ADU per
        photon the index of dispersion is g (Parkhurst et al. 2016, *J. Appl.
        Cryst.* 49, 1912, §2; Winter et al. 2018, *Acta Cryst.* D74, 85).
        A user passes the result as ``gain=`` to ``dials.find_spots``
        (here :class:`DialsConfig` ``gain`` or ``screen --dials-gain``).

        Parameters
        ----------
        frame : Frame
            ``data`` (H, W), ADU; ``mask`` (H, W) bool, True = bad.
        kernel_size : (int, int)
            Window half-size (nx, ny), px; DIALS's default (10, 10).

        Returns
        -------
        float
            The gain estimate, ADU per photon (> 0 unless DIALS finds the
            background's dispersion at or below 0).

        Raises
        ------
        DialsError
            DIALS failed (e.g. its ``Sorry`` when the index of dispersion has
            no spread, as on a constant frame) or the worker died.
        """
        w = self._running()
        np.save(w.paths["image"], np.ascontiguousarray(frame.data, dtype=np.float32))
        np.save(w.paths["valid"], ~np.asarray(frame.mask, dtype=bool))
        reply = w.ask({"op": "estimate_gain", "image": w.paths["image"], "valid": w.paths["valid"],
                       "kernel_size": [int(k) for k in kernel_size]})
        if not reply.get("ok"):
            raise DialsError(f"DIALS: {reply.get('error', 'no reply')}")
        return float(reply["gain"])

    def label(self, n_spots: int) -> str:
        """``"hit"`` at ``hit_spots`` or more, ``"maybe"`` at ``maybe_spots`` or more, else ``"miss"``."""
        c = self.config
        return "hit" if n_spots >= c.hit_spots else "maybe" if n_spots >= c.maybe_spots else "miss"

    @staticmethod
    def peak_table(spots: dict) -> np.ndarray:
        """(P, 4) float32 x, y, intensity, I/σ(I): the peak layout of hits.cxi."""
        var = spots["variance"]
        snr = np.divide(spots["intensity"], np.sqrt(var), out=np.zeros_like(var), where=var > 0)
        return np.stack([spots["x"], spots["y"], spots["intensity"], snr], axis=1).astype(np.float32).reshape(-1, 4)

    # --- the screening-method protocol of diffscreen.screen ------------------------------
    @property
    def identity(self) -> str:
        """Identifies DIALS's version and the settings (a resumed screen must use the same)."""
        return f"dials:{self.dials_version}:" + ",".join(f"{k}={v}" for k, v in sorted(self.config.to_dict().items()))

    @property
    def outputs(self):
        from diffscreen.screen.outputs import HitOutputs

        return HitOutputs(self.score_columns)

    def classify(self, frames: Sequence[Frame]) -> list:
        """Screening decisions for a batch of frames.

        Returns
        -------
        list of FrameDecision or str
            Per frame: ``scores = (n_spots, n_strong_pixels)``, label hit /
            maybe / miss, kept unless a miss, the spot table; or the one-line
            problem of a frame DIALS failed on.
        """
        from diffscreen.screen.method import FrameDecision

        out = []
        for fr in frames:
            try:
                s = self.find_spots(fr)
            except DialsError as exc:
                out.append(exc.problem)
                continue
            lab = self.label(s["n_spots"])
            warn = ()
            if s["n_strong_pixels"] > s["max_strong"]:
                warn = (f"DIALS: {s['n_strong_pixels']} strong pixels exceed max_strong_pixel_fraction "
                        f"{self.config.max_strong_pixel_fraction:g} of the frame ({s['max_strong']}): "
                        "dials.find_spots would stop here; the spots are counted all the same",)
            out.append(FrameDecision((float(s["n_spots"]), float(s["n_strong_pixels"])), lab, lab != "miss",
                                     None, self.peak_table(s), warn))
        return out

    def classify_source(self, src, indices) -> list:
        """Frames ``indices`` of an open source, read whole and checked, then classified.

        :class:`~diffscreen.screen.method.PerFrame`'s path, except that a
        frame DIALS fails on is that frame's ``error`` row, not its batch's.

        Returns
        -------
        list of FrameDecision or str
        """
        from diffscreen.preprocess.geometry import geometry_warnings
        from diffscreen.screen.method import read_checked

        out, good = read_checked(src, indices)
        frames = [fr for _, fr in good]
        for (k, fr), d in zip(good, self.classify(frames) if frames else []):
            if not isinstance(d, str):
                d.warnings = tuple(d.warnings) + tuple(geometry_warnings(fr.meta, fr.data.shape))
            out[k] = d
        return out


def _dials_geometry(frame: Frame) -> dict | None:
    """The frame's geometry for the worker's per-image analysis (beam centre in DIALS's pixel convention), or None."""
    from diffscreen.preprocess.geometry import beam_centre, reciprocal_pixel

    m = frame.meta
    if reciprocal_pixel(m) is None or m.beam_centre_px is None:
        return None
    cx, cy = beam_centre(m, frame.data.shape)
    return {"beam_x": cx + 0.5, "beam_y": cy + 0.5, "pixel_size_mm": float(m.pixel_size_mm),
            "distance_mm": float(m.distance_mm), "wavelength_A": float(m.wavelength_A)}


def dials_finder(settings_file=None, *, gain: float | None = None, python: str | None = None) -> DialsSpotFinder:
    """A :class:`DialsSpotFinder` from a settings JSON (optional) and the CLI's ``--dials-gain``.

    Parameters
    ----------
    settings_file : str or Path, optional
        JSON of :class:`DialsConfig` fields (or ``{"dials": {...}}``).
    gain : float, optional
        Overrides the file's gain.

    Raises
    ------
    ConfigError
        Unreadable or bad settings, or DIALS not installed.
    """
    base: dict = {}
    if settings_file is not None:
        try:
            base = json.loads(Path(settings_file).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{settings_file}: not a readable JSON settings file ({exc})") from None
        if not isinstance(base, dict):
            raise ConfigError(f"{settings_file}: DIALS settings must be a JSON object")
        base = base.get("dials", base)
    cfg = DialsConfig.from_dict(base)
    if gain is not None:
        cfg = replace(cfg, gain=gain)
    return DialsSpotFinder(cfg, python=python)
