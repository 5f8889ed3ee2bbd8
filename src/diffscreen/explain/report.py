"""One self-contained HTML page about a screening run (``diffscreen report``).

The page shows what a beamline scientist needs before trusting a screen
that discards data: the hit rate along the run, the confidence of the
decisions, the confusion matrix when labels exist, a gallery of kept and
rejected frames with their Grad-CAM overlays (Nawaz et al. 2022 §3.4) and a
t-SNE map of the penultimate features (Ke et al. 2018 Fig. 11).  Every image
is embedded as a base64 PNG ``data:`` URI; the page loads nothing else.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import time
from pathlib import Path

import numpy as np

from diffscreen.errors import ConfigError, DiffscreenError, FrameReadError

__all__ = ["read_screen_output", "build_report"]

_KEEP = ("hit", "maybe")


def read_screen_output(run_dir) -> dict:
    """Read ``scores.csv`` and ``summary.json`` of a screening output folder.

    Parameters
    ----------
    run_dir : str or Path
        The ``--out`` folder of ``diffscreen screen``.

    Returns
    -------
    dict
        ``rows``: list of dicts (file, frame (int), label, and the score
        columns as floats); ``score_columns``: names; ``summary``: the JSON
        record ({} if absent).

    Raises
    ------
    FrameReadError
        No ``scores.csv`` in ``run_dir`` or a malformed one.
    """
    run_dir = Path(run_dir)
    path = run_dir / "scores.csv"
    if not path.is_file():
        raise FrameReadError("no scores.csv: not a diffscreen screening output folder", path=run_dir)
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        if not {"file", "frame", "label"} <= set(cols):
            raise FrameReadError(f"scores.csv lacks file/frame/label columns (has {cols})", path=path)
        score_cols = [c for c in cols if c not in ("file", "frame", "label")]
        rows = []
        for k, r in enumerate(reader, start=2):
            try:
                row = {"file": r["file"], "frame": int(r["frame"]), "label": r["label"]}
                for c in score_cols:
                    row[c] = float(r[c]) if r[c] not in ("", None) else float("nan")
            except (TypeError, ValueError):
                raise FrameReadError(f"malformed row at line {k}", path=path) from None
            rows.append(row)
    summary = {}
    if (run_dir / "summary.json").is_file():
        try:
            summary = json.loads((run_dir / "summary.json").read_text())
        except json.JSONDecodeError:
            summary = {}
    return {"rows": rows, "score_columns": score_cols, "summary": summary}


def _b64(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _fig_png(fig) -> bytes:
    from diffscreen.explain.overlay import to_png_bytes

    return to_png_bytes(fig)


def _small(rgb: np.ndarray, side: int = 240) -> bytes:
    from PIL import Image

    from diffscreen.explain.overlay import to_png_bytes

    im = Image.fromarray(np.asarray(rgb, np.uint8))
    im.thumbnail((side, side), Image.LANCZOS)
    return to_png_bytes(np.asarray(im))


def _figure(w=6.4, h=3.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _hit_rate_plot(rows, window: int) -> bytes:
    keep = np.array([r["label"] in _KEEP for r in rows if r["label"] != "error"], float)
    fig = _figure()
    ax = fig.add_subplot(111)
    if len(keep):
        w = max(1, min(window, len(keep) // 4))  # short runs: still a curve, not one point
        rate = np.convolve(keep, np.ones(w) / w, mode="valid")
        ax.plot(np.arange(len(rate)) + w // 2, 100 * rate, lw=1.2)
        ax.axhline(100 * keep.mean(), color="grey", ls="--", lw=0.8, label=f"mean {100 * keep.mean():.1f} %")
        ax.legend(fontsize=8)
        ax.set_title(f"kept frames (hit + maybe), running mean over {w} frames", fontsize=9)
    ax.set_xlabel("frame in run order")
    ax.set_ylabel("hit rate (%)")
    ax.set_ylim(0, 100)
    fig.tight_layout()
    return _fig_png(fig)


def _histograms(rows, score_cols) -> bytes | None:
    probs = [c for c in score_cols if c.startswith("p_")]
    if not probs:
        return None
    ok = [r for r in rows if r["label"] != "error"]
    fig = _figure(6.4, 3.0)
    ax = fig.add_subplot(121)
    bins = np.linspace(0, 1, 21)
    for c in probs:
        ax.hist([r[c] for r in ok], bins=bins, histtype="step", lw=1.2, label=c)
    ax.set_xlabel("probability")
    ax.set_ylabel("frames")
    ax.set_title("class probabilities", fontsize=9)
    ax.legend(fontsize=7)
    ax = fig.add_subplot(122)
    if "p_hit" in probs:
        keep = np.array([r.get("p_hit", 0) + r.get("p_maybe", 0) for r in ok])
        lab = np.array([r["label"] in _KEEP for r in ok])
        ax.hist([keep[lab], keep[~lab]], bins=bins, stacked=True, label=["kept", "rejected"], color=["tab:red", "tab:green"])
        ax.axvline(0.5, color="k", lw=0.8, ls="--")
        ax.set_xlabel("P(hit) + P(maybe)")
        ax.set_title("keep decision (Ke 2018: > 0.5)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _fig_png(fig)


def _labels_for(rows, label_files) -> list | None:
    """True labels of the rows (from label files, or embedded in the inputs); None if none."""
    from diffscreen.io.labels import LabelTable, read_labels

    records = []
    try:
        for lf in label_files:
            records.extend(read_labels(lf))
        if not label_files:
            for spec in sorted({r["file"] for r in rows}):
                try:
                    records.extend(read_labels(spec))
                except DiffscreenError:
                    continue
        if not records:
            return None
        table = LabelTable.from_records(records)
    except DiffscreenError:
        if label_files:
            raise
        return None
    out = [table.get(r["file"], r["frame"]) for r in rows]
    return out if any(v is not None for v in out) else None


def _confusion_html(rows, truth) -> str:
    from diffscreen.evaluate import evaluate_labels

    pairs = [(t, r["label"]) for t, r in zip(truth, rows) if t is not None and r["label"] != "error"]
    if not pairs:
        return "<p>No labelled frame was screened.</p>"
    classes = ("hit", "maybe", "miss")
    rep = evaluate_labels([t for t, _ in pairs], [p for _, p in pairs], classes)
    cm = np.asarray(rep.confusion)
    h = ["<table><tr><th>true \\ predicted</th>" + "".join(f"<th>{c}</th>" for c in classes) + "<th>recall</th></tr>"]
    for i, c in enumerate(classes):
        rec = cm[i, i] / cm[i].sum() if cm[i].sum() else float("nan")
        h.append(f"<tr><th>{c}</th>" + "".join(f"<td>{int(v)}</td>" for v in cm[i]) + f"<td>{100 * rec:.1f} %</td></tr>")
    h.append("</table>")
    m = rep.metrics
    h.append(
        f"<p>{len(pairs)} labelled frames. Keep decision (hit + maybe vs miss): precision "
        f"{100 * m['precision']:.1f} %, recall {100 * m['recall']:.1f} %, miss rejection "
        f"{100 * m['miss_rejection']:.1f} %, accuracy {100 * m['accuracy']:.1f} %.</p>"
    )
    return "\n".join(h)


def _pick_gallery(rows, n: int):
    """Indices of kept and rejected frames: the most confident and the most borderline of each."""
    ok = [i for i, r in enumerate(rows) if r["label"] != "error"]

    def pkeep(i):
        r = rows[i]
        if "p_hit" in r:
            return r["p_hit"] + r.get("p_maybe", 0.0)
        return float(rows[i]["label"] in _KEEP)

    kept = sorted((i for i in ok if rows[i]["label"] in _KEEP), key=pkeep, reverse=True)
    rej = sorted((i for i in ok if rows[i]["label"] not in _KEEP), key=pkeep)
    half = max(1, n // 2)

    def choose(lst):
        if len(lst) <= n:
            return lst
        return lst[: n - half] + lst[-half:]  # confident ones, then borderline ones

    return choose(kept), choose(rej)


def _read_inputs(rows, idx, pre):
    from diffscreen.io import check_frame, open_source

    xs, good = [], []
    open_ = {}
    try:
        for i in idx:
            r = rows[i]
            try:
                if r["file"] not in open_:
                    open_[r["file"]] = open_source(r["file"])
                fr = check_frame(open_[r["file"]].read(r["frame"]))
            except DiffscreenError:
                continue
            xs.append(pre([fr])[0])
            good.append(i)
    finally:
        for s in open_.values():
            s.close()
    return (np.stack(xs) if xs else None), good


def build_report(
    run_dir,
    *,
    model=None,
    labels=(),
    out=None,
    gallery: int = 6,
    tsne_frames: int = 200,
    window: int = 50,
    seed: int = 0,
    progress=None,
    device=None,
) -> Path:
    """Write the HTML report of a screening output folder.

    Parameters
    ----------
    run_dir : str or Path
        Output folder of ``diffscreen screen`` (``scores.csv``, ``summary.json``).
    model : str or Path, optional
        Model file for the Grad-CAM overlays and t-SNE; default: the model
        named in ``summary.json`` if it is a file, else the bundled model.
    labels : sequence of str
        Label files for the confusion matrix; default: labels embedded in
        the input files (simulated CXI runs), if any.
    out : str or Path, optional
        HTML file to write; default ``run_dir/report.html``.
    gallery : int
        Frames shown per side (kept / rejected).
    tsne_frames : int
        At most this many frames (evenly spread over the run) in the t-SNE
        map; 0 skips it.  Fewer than 5 readable frames also skip it.
    window : int
        Frames in the running mean of the hit-rate plot.
    seed : int
        t-SNE seed.
    progress : callable, optional
        ``progress(message)`` between steps.
    device : torch.device or str, optional
        Where the network runs for the overlays and features (default: the CPU).

    Returns
    -------
    Path
        The HTML file (written atomically).

    Raises
    ------
    FrameReadError
        ``run_dir`` is not a screening output.
    ConfigError
        Bad ``gallery`` / ``tsne_frames`` / ``window``.
    ModelFileError, LabelError
        Unreadable model or label file.
    """
    import torch

    from diffscreen.explain import attribute, overlay, penultimate_features, tsne_embed, tsne_figure
    from diffscreen.io.atomic import atomic_write_text
    from diffscreen.models.inference import Classifier

    if gallery < 0 or tsne_frames < 0 or window < 1:
        raise ConfigError("gallery and tsne_frames must be >= 0 and window >= 1")
    note = progress or (lambda _m: None)
    run_dir = Path(run_dir)
    data = read_screen_output(run_dir)
    rows, cols, summary = data["rows"], data["score_columns"], data["summary"]
    if model is None and summary.get("model") and Path(str(summary["model"])).is_file():
        model = summary["model"]
    clf = Classifier(model, device=device)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    t0 = time.time()
    n_ok = sum(r["label"] != "error" for r in rows)
    counts = {c: sum(r["label"] == c for r in rows) for c in ("hit", "maybe", "miss", "error")}
    parts = []
    note("plots")
    parts.append("<h2>Hit rate along the run</h2>")
    parts.append(f'<img alt="hit rate along the run" src="{_b64(_hit_rate_plot(rows, window))}">')
    hist = _histograms(rows, cols)
    if hist is not None:
        parts.append("<h2>Confidence</h2>")
        parts.append(f'<img alt="confidence histograms" src="{_b64(hist)}">')
    truth = _labels_for(rows, list(labels))
    if truth is not None:
        parts.append("<h2>Confusion matrix (labelled frames)</h2>")
        parts.append(_confusion_html(rows, truth))
    note("gallery")
    kept, rej = _pick_gallery(rows, gallery)
    names = clf.class_names
    for title, idx in (("Kept frames", kept), ("Rejected frames", rej)):
        parts.append(f"<h2>{title} with Grad-CAM</h2>")
        x, good = _read_inputs(rows, idx, clf.preprocessor)
        if x is None:
            parts.append("<p>None (or their files cannot be read any more).</p>")
            continue
        maps = attribute(clf.model, x, method="gradcam")
        probs = clf.predict_batch(x)
        parts.append('<div class="gallery">')
        for j, i in enumerate(good):
            r = rows[i]
            cap = f"{html.escape(Path(r['file']).name)} #{r['frame']}: {html.escape(r['label'])}"
            cap += " (" + ", ".join(f"{n} {p:.2f}" for n, p in zip(names, probs[j])) + ")"
            if truth is not None and truth[i] is not None:
                cap += f"; label {html.escape(truth[i])}"
            parts.append(
                f'<figure><img alt="Grad-CAM of frame {i}" src="{_b64(_small(overlay(x[j, 0], maps[j])))}">'
                f"<figcaption>{cap}</figcaption></figure>"
            )
        parts.append("</div>")
    parts.append(
        "<p class='note'>Grad-CAM (Selvaraju et al. 2017; Nawaz et al. 2022 §3.4) of the predicted class "
        "over the preprocessed frame: red = regions that raised that class's score.</p>"
    )
    if tsne_frames:
        note("t-SNE")
        ok = [i for i, r in enumerate(rows) if r["label"] != "error"]
        sel = [ok[int(k)] for k in np.unique(np.linspace(0, len(ok) - 1, min(tsne_frames, len(ok))).round())] if ok else []
        x, good = _read_inputs(rows, sel, clf.preprocessor)
        if x is not None and len(good) >= 5:
            feats = penultimate_features(clf.model, x)
            emb = tsne_embed(feats, seed=seed)
            lab = [truth[i] if truth is not None and truth[i] is not None else rows[i]["label"] for i in good]
            thumbs = {}
            for c in ("hit", "maybe", "miss"):
                ks = [k for k, v in enumerate(lab) if v == c]
                if ks:
                    thumbs[ks[0]] = x[ks[0], 0]
            fig = tsne_figure(emb, lab, [c for c in ("hit", "maybe", "miss") if c in lab] or None, thumbnails=thumbs,
                              title=f"t-SNE of penultimate features ({len(good)} frames; colour: "
                              f"{'label' if truth is not None else 'decision'})")
            parts.append("<h2>t-SNE map</h2>")
            parts.append(f'<img alt="t-SNE map" src="{_b64(_fig_png(fig))}">')
        else:
            parts.append("<h2>t-SNE map</h2><p>Too few readable frames for a t-SNE map.</p>")
    rate = (counts["hit"] + counts["maybe"]) / n_ok if n_ok else float("nan")
    head = (
        "<table>"
        f"<tr><th>output folder</th><td>{html.escape(str(run_dir.resolve()))}</td></tr>"
        f"<tr><th>model</th><td>{html.escape(str(clf.bundle.path))} ({html.escape(clf.bundle.arch)})</td></tr>"
        f"<tr><th>frames</th><td>{len(rows)} ({counts['hit']} hit, {counts['maybe']} maybe, "
        f"{counts['miss']} miss, {counts['error']} error)</td></tr>"
        f"<tr><th>hit rate (hit + maybe)</th><td>{100 * rate:.1f} %</td></tr>"
    )
    if summary.get("frames_per_s") is not None:
        head += f"<tr><th>speed</th><td>{summary.get('frames_per_s', float('nan')):.1f} frames/s</td></tr>"
    head += "</table>"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>diffscreen report</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; max-width: 70em; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
th, td {{ border: 1px solid #bbb; padding: 0.2em 0.6em; text-align: left; }}
.gallery {{ display: flex; flex-wrap: wrap; gap: 0.6em; }}
figure {{ margin: 0; width: 240px; }} figcaption {{ font-size: 0.75em; }}
.note {{ font-size: 0.85em; color: #444; }}
</style></head>
<body>
<h1>diffscreen screening report</h1>
{head}
{chr(10).join(parts)}
<p class="note">Written by diffscreen on {time.strftime("%Y-%m-%d %H:%M:%S")} in {time.time() - t0:.0f} s.
Self-contained: all images are embedded.</p>
</body></html>
"""
    out = Path(out) if out is not None else run_dir / "report.html"
    atomic_write_text(out, page)
    return out
