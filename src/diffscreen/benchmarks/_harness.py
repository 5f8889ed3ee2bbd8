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


def per_seed(seeds, cached, run_seed, *, log=print) -> list[dict]:
    """Each seed's result, read from its cache file when there is one, else run and then cached.

    Parameters
    ----------
    seeds : sequence of int
    cached : callable
        ``cached(seed)`` → the seed's cache file (a ``Path`` whose name should
        carry a :func:`digest` of the settings, so that other settings miss it).
    run_seed : callable
        ``run_seed(i, seed)`` → the result dict of the ``i``-th seed (JSON-ready).
    log : callable

    Returns
    -------
    list of dict
        The results in the order of ``seeds``, each with ``"seed"`` added, as
        read back from its cache file whether it was just run or not, so that
        fresh and cached seeds have the same keys (JSON makes every key text).
    """
    out = []
    for i, s in enumerate(seeds):
        path = Path(cached(s))
        if path.exists():
            log(f"seed {s}: {path}")
            res = json.loads(path.read_text())
        else:
            log(f"seed {s}")
            write_json(path, run_seed(i, s))
            res = json.loads(path.read_text())  # as a cached seed reads: e.g. integer keys become text
        out.append({**res, "seed": s})
    return out


def publish_figures(src, out, names, *, log=print) -> None:
    """Copy one seed's figures ``names`` from its run folder ``src`` into the report folder ``out`` (atomically).

    A seed's run draws its figures in a folder of its own, so that a report
    made from cached seeds still gets them; a figure missing from ``src`` (a
    seed cached before this was so) is logged and left as it is in ``out``.
    """
    import shutil

    for name in names:
        if not (Path(src) / name).exists():
            log(f"{Path(src) / name} is missing: {Path(out) / name} is left as it is")
            continue
        with temporary_path(Path(out) / name) as tmp:
            shutil.copyfile(Path(src) / name, tmp)


#: :func:`verdict` of an interval that lies wholly below 0; :func:`findings_lines` looks for it
OPPOSITE = "the opposite holds"


def verdict(iv: dict) -> str:
    """What the 95 % interval of a difference says (an ``interval_record`` of
    :mod:`diffscreen.evaluate.metrics`): "holds" if it lies above 0, "the opposite holds" if below, else
    "not established"."""
    lo, hi = iv["ci95"]
    if not (lo == lo and hi == hi):  # NaN: fewer than two seeds
        return "not testable with one seed"
    return "holds" if lo > 0 else OPPOSITE if hi < 0 else "not established (the interval spans 0)"


def ci_text(iv: dict, nd: int = 3, scale: float = 1.0) -> str:
    """An interval record as ``mean [lo, hi]`` with ``nd`` decimals, each times ``scale`` (the mean alone for one
    seed)."""
    m, (lo, hi) = iv["mean"] * scale, iv["ci95"]
    return f"{m:.{nd}f} [{lo * scale:.{nd}f}, {hi * scale:.{nd}f}]" if lo == lo else f"{m:.{nd}f}"


def across(per_seed: list) -> dict:
    """One report's results from several seeds' (:func:`per_seed`): every number as its interval
    (:func:`intervals`), the findings as :func:`findings_across`, ``seconds`` and ``training_seconds`` summed,
    and ``seeds`` and ``per_seed`` (the seeds' own results) added."""
    out = {**intervals(per_seed), "seeds": [r["seed"] for r in per_seed], "per_seed": per_seed}
    out.pop("seed", None)
    if all("findings" in r for r in per_seed):
        out["findings"] = findings_across([r["findings"] for r in per_seed])
    for k in ("seconds", "training_seconds"):
        if all(isinstance(r.get(k), (int, float)) for r in per_seed):
            out[k] = float(sum(r[k] for r in per_seed))
    return out


def seeds_line(results: dict) -> list[str]:
    """The report's sentence on its seeds, if it comes from several (:func:`across`); else nothing."""
    seeds = results.get("seeds")
    if not seeds or len(seeds) < 2:
        return []
    return [f"**{len(seeds)} seeds** ({', '.join(map(str, seeds))}): each number is the mean over the seeds with "
            "its 95 % Student-t interval in parentheses (a number without one was the same at every seed); a "
            "finding holds only where the interval of its difference excludes 0. Tuned settings and figures are "
            f"those of seed {seeds[0]}."]


def pool_map(fn, args, workers: int, done=None) -> list:
    """``[fn(*a) for a in args]`` in ``workers`` spawned processes (in this process if ``workers`` ≤ 1).

    Spawned, never forked: a forked process may inherit torch's threads.  ``done()``, if given, is called as each
    result arrives (in order), e.g. to advance a progress bar.
    """
    args = list(args)
    if workers <= 1:
        return _collect((fn(*a) for a in args), done)
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as ex:
        return _collect(ex.map(fn, *zip(*args)) if args else [], done)


def _collect(results, done) -> list:
    """The results as a list, calling ``done()`` (if given) after each."""
    out = []
    for r in results:
        out.append(r)
        if done is not None:
            done()
    return out


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
    """The findings that have rows, in order: name -> ``{"holds": all rows hold, "detail": the details "; "-joined,
    "effects": {row key: difference}}``.

    ``rows_by_name`` maps each finding's name to its list of rows, each
    ``(detail, holds)`` or ``(detail, holds, key, difference)``: ``key`` names
    the row the same way at every seed (a preset or a pair) and
    ``difference`` is the number whose sign decides it (positive: it holds),
    so that :func:`findings_across` can give it an interval over seeds.
    """
    return {name: {"holds": all(r[1] for r in rows), "detail": "; ".join(r[0] for r in rows),
                   "effects": {r[2]: float(r[3]) for r in rows if len(r) == 4}}
            for name, rows in rows_by_name.items() if rows}


def findings_across(per_seed: list) -> dict:
    """The findings of several seeds (each :func:`findings`'s dict): each row's difference over the seeds.

    Returns
    -------
    dict
        name -> ``{"held_at": seeds where every row held, "seeds": n, "effects": {key: interval record},
        "verdicts": {key: verdict}, "holds": every row's interval above 0}`` (:func:`verdict`); a finding
        without differences has no verdicts and holds only if it held at every seed.
    """
    from diffscreen.evaluate.metrics import interval_record

    out = {}
    for name in per_seed[0]:
        fs = [f[name] for f in per_seed if name in f]
        keys = [k for k in fs[0].get("effects", {}) if all(k in f.get("effects", {}) for f in fs)]
        eff = {k: interval_record(f["effects"][k] for f in fs) for k in keys}
        verdicts = {k: verdict(iv) for k, iv in eff.items()}
        held = sum(f["holds"] for f in fs)
        out[name] = {"held_at": held, "seeds": len(fs), "effects": eff, "verdicts": verdicts,
                     "holds": all(v == "holds" for v in verdicts.values()) if verdicts else held == len(fs)}
    return out


def findings_lines(findings: dict, asserted=()) -> list[str]:
    """Markdown section listing each finding, whether it holds and its numbers (empty if none).

    ``findings`` is one seed's (:func:`findings`) or several seeds' (:func:`findings_across`).
    """
    if not findings:
        return []
    L = ["", "## The paper's qualitative findings", ""]
    for name, f in findings.items():
        tag = " (asserted by `--quick`)" if name in asserted else ""
        if "verdicts" not in f:
            L.append(f"- {'holds' if f['holds'] else '**does not hold**'}: {name.replace('_', ' ')}{tag} "
                     f"({f['detail']})")
            continue
        rows = "; ".join(f"{k}: {fmt(f['effects'][k])}, {v}" for k, v in f["verdicts"].items())
        opposite = bool(f["verdicts"]) and all(v == OPPOSITE for v in f["verdicts"].values())
        label = "holds" if f["holds"] else f"**{OPPOSITE}**" if opposite else "**not established**"
        L.append(f"- {label}: {name.replace('_', ' ')}{tag} (held at "
                 f"{f['held_at']} of {f['seeds']} seeds" + (f"; each row's difference, mean (95 % interval): {rows}"
                                                            if rows else "") + ")")
    return L


def is_interval(v) -> bool:
    """Whether ``v`` is an interval record (``{"mean", "ci95", "values"}``, :mod:`diffscreen.evaluate.metrics`)."""
    return isinstance(v, dict) and "ci95" in v and "mean" in v and "values" in v


def intervals(results: list, keep=("settings", "findings")):
    """Several seeds' results as one tree of the same shape, for the reports to print.

    A number that differs between the seeds becomes its interval record
    (:func:`diffscreen.evaluate.metrics.interval_record`, printed by
    :func:`fmt`); a number equal at every seed stays itself; text, lists and
    the keys in ``keep`` are the first seed's.  Keys missing at some seed are
    left out.
    """
    from diffscreen.evaluate.metrics import interval_record

    first = results[0]
    if isinstance(first, dict):
        return {k: (first[k] if k in keep else intervals([r[k] for r in results], keep))
                for k in first if all(isinstance(r, dict) and k in r for r in results)}
    numbers = all(isinstance(r, (int, float, np.number)) and not isinstance(r, bool) for r in results)
    if not numbers or all(r == first for r in results):
        return first
    return interval_record(results)


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
    """A number with ``nd`` decimals; "–" for None or NaN; an interval record (:func:`intervals`) as
    ``mean (lo–hi)``."""
    if is_interval(v):
        lo, hi = v["ci95"]
        return f"{fmt(v['mean'], nd)} ({lo:.{nd}f}–{hi:.{nd}f})" if lo == lo else fmt(v["mean"], nd)
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
