"""Screening single-particle CDI frames with a multi-label model (Zimmermann et al. 2019).

Every frame is preprocessed with the recipe stored in the model file (a
diffraction image or a CCF map, :mod:`diffscreen.preprocess.cdi`), and the
network's 11 sigmoid outputs are written with the thresholded multi-hot
labels.  Outputs in ``out_dir`` (each written atomically):

``scores.csv``
    ``file,frame,p_<class>…,<class>…,labels,rule_violation``: one row per
    frame; ``p_*`` probabilities, the 0/1 columns the multi-hot labels at
    ``threshold``, ``labels`` the positive class names joined by ``;`` and
    ``rule_violation`` 1 when the predicted set breaks a Fig. 2 rule.
``errors.csv``
    ``file,frame,error`` for frames or files that could not be screened.
``summary.json``
    Counts per class, rule-violation rate, model, threshold, speed.

Frames are classified in chunks whose probabilities go to
``out_dir/.partial/``; an interrupted screen resumes from the completed
chunks when run again with the same inputs and model (as
:func:`diffscreen.screen.screen` does).
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from diffscreen.errors import ConfigError
from diffscreen.io.atomic import atomic_write_text
from diffscreen.io.outdir import OutputLock, remove_stale_parts

__all__ = ["CDIScreenSummary", "screen_cdi", "load_cdi_model"]


@dataclass
class CDIScreenSummary:
    """Result of :func:`screen_cdi`.

    Attributes
    ----------
    n_frames, n_error : int
    class_counts : dict of str → int
        Frames predicted positive per class.
    violation_rate : float
        Fraction of screened frames whose predicted labels break a Fig. 2 rule.
    seconds, frames_per_s : float
    errors : list of (file, frame, message)
    """

    n_frames: int = 0
    n_error: int = 0
    class_counts: dict = field(default_factory=dict)
    violation_rate: float = 0.0
    seconds: float = 0.0
    frames_per_s: float = 0.0
    errors: list = field(default_factory=list)

    def text(self) -> str:
        top = ", ".join(f"{k} {v}" for k, v in sorted(self.class_counts.items(), key=lambda kv: -kv[1]) if v)
        return (f"frames: {self.n_frames}  errors: {self.n_error}  rule violations: {100 * self.violation_rate:.1f}%\n"
                f"positive labels: {top or 'none'}\n"
                f"speed: {self.frames_per_s:.1f} frames/s ({self.seconds:.1f} s)")


def load_cdi_model(path):
    """Load a CDI model file and check that it is one.

    Raises
    ------
    ConfigError
        No path given, or the file holds a model for another task.
    ModelFileError
        Missing or corrupt file.
    """
    from diffscreen.models import load_model
    from diffscreen.preprocess.cdi import CDIPreprocessConfig

    if path is None:
        raise ConfigError("--task cdi needs --model: there is no bundled CDI model; "
                          "train one with `diffscreen train --task cdi`")
    bundle = load_model(path)
    if bundle.meta.get("task") != "cdi" or not isinstance(bundle.preprocess, CDIPreprocessConfig):
        raise ConfigError(f"{path} is not a CDI model (task {bundle.meta.get('task', 'crystallography')!r})")
    return bundle


def screen_cdi(inputs, out_dir, *, model, batch_size: int = 32, threshold: float = 0.5, progress=None,
               log=None, chunk_size: int = 512, resume: bool = True) -> CDIScreenSummary:
    """Classify every frame of ``inputs`` into the 11 CDI classes.

    Parameters
    ----------
    inputs : sequence of str
        Frame specs (:func:`diffscreen.io.expand_inputs`): CXI runs, TIFFs, ...
    out_dir : str or Path
    model : str, Path or ModelBundle
        A model written by ``diffscreen train --task cdi``.
    batch_size : int
    threshold : float
        Probability at which a label is set (0 < threshold < 1).
    progress : callable, optional
        ``progress(total=None, advance=None)``.
    chunk_size : int
        Frames per resumable chunk.
    resume : bool
        Reuse the completed chunks of an interrupted screen with the same
        inputs and model; False starts afresh.

    Returns
    -------
    CDIScreenSummary

    Raises
    ------
    ConfigError
        Not a CDI model, or a bad threshold / batch size.
    """
    if not (0 < threshold < 1):
        raise ConfigError(f"threshold must be in (0, 1), got {threshold}")
    if batch_size < 1 or chunk_size < 1:
        raise ConfigError("batch_size and chunk_size must be >= 1")
    bundle = model if hasattr(model, "model") else load_cdi_model(model)
    out = Path(out_dir)
    part = out / ".partial"
    with OutputLock(out):
        remove_stale_parts(out)
        remove_stale_parts(part)
        return _screen_cdi_locked(inputs, out, part, bundle, threshold, batch_size, chunk_size, resume, progress)


def _screen_cdi_locked(inputs, out, part, bundle, threshold, batch_size, chunk_size, resume, progress):
    """:func:`screen_cdi` while it holds the output folder's lock."""
    import shutil

    import torch

    from diffscreen.evaluate.multilabel import rule_violations
    from diffscreen.io.atomic import temporary_path
    from diffscreen.preprocess.cdi import prepare_cdi
    from diffscreen.screen.runner import FrameReader, _read_json, _work_list, problem_of, strict_json

    names = list(bundle.class_names)
    pre = bundle.preprocess
    net = bundle.model.eval()
    t0 = time.time()
    errors: list = []
    items = _work_list(list(inputs), errors)
    manifest = {"inputs": list(inputs), "n_items": len(items), "chunk_size": chunk_size,
                "model": str(bundle.path), "preprocess": pre.to_dict()}  # fmt: skip
    if part.exists() and (not resume or _read_json(part / "manifest.json") != manifest):
        shutil.rmtree(part)
    part.mkdir(parents=True, exist_ok=True)
    atomic_write_text(part / "manifest.json", json.dumps(manifest))
    if progress:
        progress(total=len(items))

    def classify(chunk):
        """Probabilities (n, C) of the frames of one chunk, and its errors."""
        probs, keys, errs, buf = [], [], [], []
        reader = FrameReader()

        def flush():
            if buf:
                x = torch.from_numpy(np.stack([b[1] for b in buf])[:, None])
                with torch.no_grad():
                    probs.append(torch.sigmoid(net(x)).numpy())
                keys.extend(b[0] for b in buf)
                buf.clear()

        try:
            for spec, i in chunk:
                try:
                    fr, _ = reader.read(spec, i)
                    buf.append(((spec, i), prepare_cdi(fr.data, pre, mask=fr.mask, meta=fr.meta)))
                except Exception as exc:  # noqa: BLE001 - the firewall: one frame's failure is its error row
                    errs.append((spec, i, problem_of(exc)))
                if len(buf) >= batch_size:
                    flush()
            flush()
        finally:
            reader.close()
        P = np.concatenate(probs) if probs else np.zeros((0, len(names)), np.float32)
        ok = np.isfinite(P).all(axis=1)  # never a silent label from NaN probabilities
        errs.extend((f, i, "the classifier gave a non-finite probability (NaN or inf); the frame is not classified")
                    for (f, i), good in zip(keys, ok) if not good)
        return [k for k, good in zip(keys, ok) if good], P[ok], errs

    rows = []
    n_new = 0
    for c in range(0, len(items), chunk_size):
        chunk = items[c : c + chunk_size]
        path = part / f"chunk_{c // chunk_size:06d}.json"
        rec = _read_json(path)
        if rec is None:
            keys, P, errs = classify(chunk)
            rec = {"keys": keys, "p": P.tolist(), "errors": errs}
            with temporary_path(path) as tmp:  # written last: marks the chunk complete
                Path(tmp).write_text(json.dumps(rec))
            n_new += len(chunk)
        rows.extend((f, i, np.asarray(p, np.float32)) for (f, i), p in zip(rec["keys"], rec["p"]))
        errors.extend(tuple(e) for e in rec["errors"])
        if progress:
            progress(advance=len(chunk))
    P = np.array([r[2] for r in rows], dtype=np.float32).reshape(-1, len(names))
    Y = P >= threshold
    viol = rule_violations(Y)["any"] if len(names) == 11 and len(P) else np.zeros(len(P), bool)
    s = io.StringIO()
    w = csv.writer(s, lineterminator="\n")
    w.writerow(["file", "frame", *[f"p_{n}" for n in names], *names, "labels", "rule_violation"])
    for (f, i, p), y, v in zip(rows, Y, viol):
        w.writerow([f, i, *[f"{x:.6f}" for x in p], *[int(b) for b in y],
                    ";".join(n for n, b in zip(names, y) if b), int(v)])
    atomic_write_text(out / "scores.csv", s.getvalue())
    e = io.StringIO()
    ew = csv.writer(e, lineterminator="\n")
    ew.writerow(["file", "frame", "error"])
    ew.writerows(errors)
    atomic_write_text(out / "errors.csv", e.getvalue())
    dt = time.time() - t0
    n_done = n_new if n_new else len(rows)
    summ = CDIScreenSummary(
        n_frames=len(rows) + len(errors), n_error=len(errors),
        class_counts={n: int(c) for n, c in zip(names, Y.sum(0))} if len(P) else dict.fromkeys(names, 0),
        violation_rate=float(viol.mean()) if len(viol) else 0.0, seconds=dt,
        frames_per_s=n_done / dt if dt > 0 else 0.0, errors=errors,
    )
    rec = {**asdict(summ), "errors": len(errors), "task": "cdi", "threshold": threshold,
           "model": bundle.path, "preprocess": pre.to_dict(), "class_names": names}
    atomic_write_text(out / "summary.json", strict_json(rec))
    shutil.rmtree(part, ignore_errors=True)
    return summ
