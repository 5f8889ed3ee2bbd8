"""What every paper benchmark shares: its run folders, cached jobs, the process pool, findings and report files.

Each paper's module keeps only its experiments and calls these.  Caches are
keyed by a hash of the settings that make them (:func:`digest`) and written
atomically (:mod:`diffscreen.io.atomic`), so an interrupted run resumes.  The
keep decision scored everywhere (:func:`diffscreen.evaluate.metrics.keep_scores`)
is Ke et al. (2018) Eq. 4: a frame is kept (hit or maybe) when P(hit) + P(maybe) > P(miss).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

from diffscreen.errors import DiffscreenError
from diffscreen.io.atomic import atomic_write_text, temporary_path


class FindingNotReproduced(DiffscreenError, RuntimeError):
    """A finding that a benchmark's ``--quick`` mode asserts did not hold.

    A real exception, not ``assert``, so that ``python -O`` cannot skip the
    check.  The CLI exits with status 1, like the other ``--quick`` modes whose
    asserted findings fail.
    """

    exit_status = 1


def start(out_dir, work, settings, quick: bool) -> tuple[Path, Path, dict]:
    """The folders of one run and its results skeleton.

    Returns
    -------
    (Path, Path, dict)
        ``out_dir``; ``work`` (default ``out_dir/work``, created); the results
        ``{"settings": asdict(settings), "quick": quick}``.
    """
    out = Path(out_dir)
    work = Path(work) if work else out / "work"
    work.mkdir(parents=True, exist_ok=True)
    return out, work, {"settings": asdict(settings), "quick": quick}


def digest(obj, n: int = 10) -> str:
    """First ``n`` hex digits of the SHA-256 of ``obj`` as sorted JSON: the key of a cached job."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def save_npy(path: Path, a: np.ndarray) -> None:
    """Write one array as ``.npy`` atomically."""
    with temporary_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, a)


def write_json(path: Path, obj, indent: int | None = 1) -> None:
    """Write ``obj`` as JSON atomically (numpy scalars as floats)."""
    atomic_write_text(path, json.dumps(obj, indent=indent, default=float))


def pool_map(fn, args, workers: int) -> list:
    """``[fn(*a) for a in args]`` in ``workers`` spawned processes (in this process if ``workers`` ≤ 1).

    Spawned, never forked: a forked process may inherit torch's threads.
    """
    args = list(args)
    if workers <= 1:
        return [fn(*a) for a in args]
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as ex:
        return list(ex.map(fn, *zip(*args))) if args else []


def predict(model, x, batch: int = 32) -> np.ndarray:
    """Softmax class probabilities (N, C) float32 of preprocessed inputs (N, 1, S, S), ``batch`` at a time.

    ``model`` is a model file or a loaded network; no input gives (0, 3).
    """
    from diffscreen.models import load_model
    from diffscreen.models.batch import predict_arrays

    net = load_model(model).model if isinstance(model, (str, Path)) else model
    return predict_arrays(net, x, batch_size=batch) if len(x) else np.zeros((0, 3), np.float32)


def rate(call, items) -> float:
    """Items per second of ``call(item)`` over ``items``, after one warm-up call on the first."""
    call(items[0])
    t = time.perf_counter()
    for item in items:
        call(item)
    return len(items) / (time.perf_counter() - t)


def findings(rows_by_name: dict) -> dict:
    """The findings that have rows, in order: name -> ``{"holds": all rows hold, "detail": the details "; "-joined}``.

    ``rows_by_name`` maps each finding's name to its list of ``(detail, holds)`` rows.
    """
    return {name: {"holds": all(ok for _, ok in rows), "detail": "; ".join(d for d, _ in rows)}
            for name, rows in rows_by_name.items() if rows}


def findings_lines(findings: dict, asserted=()) -> list[str]:
    """Markdown section listing each finding, whether it holds and its numbers (empty if none)."""
    if not findings:
        return []
    L = ["", "## The paper's qualitative findings", ""]
    for name, f in findings.items():
        tag = " (asserted by `--quick`)" if name in asserted else ""
        L.append(f"- {'holds' if f['holds'] else '**does not hold**'}: {name.replace('_', ' ')}{tag} ({f['detail']})")
    return L


def _row(cells) -> str:
    """One markdown table line; an empty cell is written ``| |``."""
    return "|" + "|".join(f" {c} " if str(c) else " " for c in cells) + "|"


def table(columns, rows) -> list[str]:
    """The lines of a markdown table: its header with ``columns``, then one line per row (a sequence of cells)."""
    return [_row(columns), "|" + "---|" * len(columns)] + [_row(row) for row in rows]


def paragraphs(*blocks) -> list[str]:
    """Markdown lines of ``blocks`` separated by one blank line; a block is a line (str) or its lines (a list)."""
    out = []
    for b in blocks:
        out += ([""] if out else []) + ([b] if isinstance(b, str) else list(b))
    return out


def fmt(v, nd: int = 1) -> str:
    """A number with ``nd`` decimals; "–" for None or NaN."""
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{nd}f}"


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int) -> None:
    """Write a pyplot figure as PNG atomically and close it."""
    with temporary_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    pyplot().close(fig)


def write_report(out: Path, name: str, markdown, results: dict) -> Path:
    """Write ``out/name.md`` and ``out/name.json`` (the results) atomically; returns the ``.md`` path.

    ``markdown`` is the text, or its lines (joined, with a final newline).
    """
    atomic_write_text(out / f"{name}.md", markdown if isinstance(markdown, str) else "\n".join(markdown) + "\n")
    write_json(out / f"{name}.json", results)
    return out / f"{name}.md"
