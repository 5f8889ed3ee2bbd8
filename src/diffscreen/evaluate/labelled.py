"""True and predicted labels of labelled frames, for :func:`~diffscreen.evaluate.metrics.evaluate_labels`."""

from __future__ import annotations

from contextlib import ExitStack

import numpy as np

__all__ = ["labels_for_scores", "predict_labelled", "manifest_frames", "real_frame_scores", "annotation_spotfinder"]


def labels_for_scores(scores_csv, inputs=(), label_files=()) -> tuple[list[str], list[str]]:
    """Pair the labels of a ``scores.csv`` with the true labels of its frames.

    Parameters
    ----------
    scores_csv : str or Path
        A ``screen`` output (file, frame, ..., label).
    inputs : sequence of str
        Inputs that carry their own labels (simulated CXI runs).
    label_files : sequence of str or Path
        Label files (expert_annotation.txt, CSV file,frame,label).

    Returns
    -------
    true, pred : lists of str
        Class names of the frames that have a label and were screened without error, in the file's order.

    Raises
    ------
    LabelError
        No frame in the scores file has a label.
    """
    from diffscreen.errors import LabelError
    from diffscreen.io.labels import LabelTable, read_labels
    from diffscreen.io.scores import read_scores

    records = []
    for source in [str(x) for x in label_files] + list(inputs):
        records.extend(read_labels(source))
    table = LabelTable.from_records(records)
    true, pred = [], []
    for row in read_scores(scores_csv):
        if row["label"] == "error":
            continue
        t = table.get(row["file"], row.frame)
        if t is not None:
            true.append(t)
            pred.append(row["label"])
    if not true:
        raise LabelError("no frame in the scores file has a label", path=scores_csv)
    return true, pred


def predict_labelled(samples, classifier, *, batch_size: int = 16, progress=None) -> tuple[list[str], list[str]]:
    """Classify labelled frames (centred crops) and decide each (Ke et al. 2018: keep when P(hit) + P(maybe) > P(miss)).

    Parameters
    ----------
    samples : sequence of Sample
        Frames with ``source``, ``index`` and ``label`` (a class index of the classifier), e.g. from
        :func:`~diffscreen.io.labels.collect_samples`.
    classifier : Classifier
    batch_size : int
        Frames per forward pass.
    progress : callable, optional
        Called as ``progress(total=n)`` once, then ``progress(advance=k)`` per batch.

    Returns
    -------
    true, pred : lists of str
        Class names, in the order of ``samples``.

    Raises
    ------
    FrameReadError, BadFrameError
        A frame cannot be read, or has NaN/inf pixels or is empty.
    """
    from diffscreen.io import open_source
    from diffscreen.io.frame import check_frame
    from diffscreen.models.decision import decide

    names, progress = classifier.class_names, progress or (lambda **kw: None)
    true, pred = [], []
    progress(total=len(samples))
    with ExitStack() as stack:
        sources = {}  # each file stays open across its frames

        def item(s):
            if s.source not in sources:
                sources[s.source] = stack.enter_context(open_source(s.source))
            return classifier.preprocessor([check_frame(sources[s.source].read(s.index))], shifts=[(0, 0)])[0]

        for b in range(0, len(samples), batch_size):
            chunk = samples[b:b + batch_size]
            _, lab = decide(classifier.predict_batch(np.stack([item(s) for s in chunk])), names)
            pred.extend(lab)
            true.extend(names[s.label] for s in chunk)
            progress(advance=len(chunk))
    return true, pred


def manifest_frames(folders) -> list[tuple[str, str, str]]:
    """The labelled real frames of folders that each hold a ``MANIFEST.tsv`` (columns ``file``, ``label``).

    Returns
    -------
    list of (str, str, str)
        ``(name, label, spec)`` per file, in manifest order: ``name`` is ``folder/file``, ``spec`` what
        :func:`diffscreen.io.open_source` opens (the file's path).
    """
    import csv
    from pathlib import Path

    out = []
    for folder in map(Path, folders):
        with open(folder / "MANIFEST.tsv", newline="") as fh:
            for r in csv.DictReader(fh, delimiter="\t"):
                out.append((f"{folder.name}/{r['file']}", r["label"], str(folder / r["file"])))
    return out


def real_frame_scores(model_path, folders, *, min_spots: int | None = None) -> dict:
    """Keep decisions of a model on labelled real frames (a ``MANIFEST.tsv`` per folder), as ``screen`` makes them.

    The network's decision, then the spot gate on the frames it keeps
    (:func:`~diffscreen.models.decision.spot_gate`).  A frame that cannot be read counts as wrongly decided.

    Parameters
    ----------
    model_path : str or Path
    folders : sequence of Path
        Folders with a ``MANIFEST.tsv`` (columns ``file``, ``label``).
    min_spots : int, optional
        The spot gate's ``min_spots`` (``screen --min-spots``; default
        :data:`~diffscreen.models.decision.KEEP_MIN_SPOTS`, as ``screen``); 0: the network alone.

    Returns
    -------
    dict
        ``{"balanced_accuracy"`` (of the keep decision,
        :func:`~diffscreen.evaluate.metrics.kept_balanced_accuracy`),
        ``"frames": {name: {"label", "p", "n_spots", "call"}}, "unread": [...]}``; ``n_spots`` is the gate's count
        (spots off every ring and streak, :func:`~diffscreen.preprocess.spots.count_spots_off_rings`), None where the
        spots were not counted (the network dropped the frame, or no gate).
    """
    from diffscreen.errors import DiffscreenError
    from diffscreen.evaluate.metrics import keep_decision, kept_balanced_accuracy
    from diffscreen.io import open_source
    from diffscreen.io.frame import CLASS_NAMES
    from diffscreen.models.decision import KEEP_MIN_SPOTS, spot_gate
    from diffscreen.models.inference import Classifier
    from diffscreen.preprocess.spots import count_spots_off_rings

    min_spots = KEEP_MIN_SPOTS if min_spots is None else min_spots
    clf = Classifier(model_path)
    ys, kept, frames, unread = [], [], {}, []
    for name, label, spec in manifest_frames(folders):
        n_spots = None
        try:
            with open_source(spec) as src:
                fr = src.read(0)
            p = clf.predict([fr])[0]
            keep = bool(keep_decision(p[None])[0])
            if keep and min_spots:
                n_spots = count_spots_off_rings(fr)
                keep = bool(spot_gate([keep], [n_spots], min_spots)[0])
        except DiffscreenError as exc:
            unread.append(f"{name.split('/', 1)[1]}: {exc}")
            p, keep = np.full(len(CLASS_NAMES), np.nan), label == "miss"  # counted wrong
        ys.append(CLASS_NAMES.index(label))
        kept.append(keep)
        frames[name] = {"label": label, "p": [float(v) for v in p], "n_spots": n_spots,
                        "call": "keep" if keep else "drop"}
    return {"balanced_accuracy": kept_balanced_accuracy(np.array(kept), np.array(ys)), "frames": frames,
            "unread": unread}


def annotation_spotfinder(folder) -> dict:
    """Ke et al. (2018) Table 3's automatic spot-finding column and Fig. 7, from the CXIDB-76 annotation files.

    For each run folder holding ``expert_annotation.txt`` and
    ``dials_annotation.txt`` (the authors' labels, CXIDB entry 76), the
    expert's classes are compared with the DIALS spot-finder's Hit/Miss, whose
    per-run spot-count threshold the file already applies (``annotation_notes``);
    frames the DIALS file leaves out had no spot and are misses.  Ke et al.
    2018 §3.3, Table 3 and Fig. 7.

    Parameters
    ----------
    folder : str or Path
        The annotation folder (one sub-folder per run: L498, LG36, LN83, LN84, LO19).

    Returns
    -------
    dict
        Per run: ``kept_of_hit_or_maybe`` and ``kept_of_miss`` (% of the
        expert's hit-or-maybe and miss frames the spot-finder calls Hit),
        ``threshold`` (the fewest spots of a DIALS Hit), ``counts`` (expert
        class → frames) and ``n_spots`` (expert class → list of DIALS spot
        counts, for Fig. 7).

    Raises
    ------
    LabelError
        A malformed annotation file (:mod:`diffscreen.io.labels`).
    """
    from pathlib import Path

    from diffscreen.io.labels import read_dials_annotation, read_expert_annotation

    out = {}
    for run in sorted(p for p in Path(folder).iterdir() if p.is_dir()):
        expert_file, dials_file = run / "expert_annotation.txt", run / "dials_annotation.txt"
        if not (expert_file.is_file() and dials_file.is_file()):
            continue
        expert = read_expert_annotation(expert_file)
        dials = {r.frame: r for r in read_dials_annotation(dials_file, n_frames=len(expert))}
        called = {c: [dials[e.frame] for e in expert if e.label == c] for c in ("hit", "maybe", "miss")}
        keep_hm = [d.label == "hit" for d in called["hit"] + called["maybe"]]
        keep_miss = [d.label == "hit" for d in called["miss"]]
        out[run.name] = {
            "kept_of_hit_or_maybe": 100.0 * sum(keep_hm) / max(len(keep_hm), 1),
            "kept_of_miss": 100.0 * sum(keep_miss) / max(len(keep_miss), 1),
            "threshold": min((d.n_spots for d in dials.values() if d.label == "hit"), default=None),
            "counts": {c: len(v) for c, v in called.items()},
            "n_spots": {c: [int(d.n_spots) for d in v] for c, v in called.items()},
        }
    return out

