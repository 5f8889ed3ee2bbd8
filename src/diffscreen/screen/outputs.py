"""How a screening method's decisions are written and counted: the formats of scores.csv and summary.json.

The runner (:mod:`diffscreen.screen.runner`) stores, per frame, the cells a
method's outputs give (:meth:`HitOutputs.cells`) and hands every row to a
tally; it never reads the cells itself.

* :class:`HitOutputs`: single-label screening (hit/maybe/miss CNN,
  peakfinder8): ``file,frame,<scores>,label`` with an ``error`` row for each
  frame that failed, ``hits.lst`` of the kept frames, and
  :class:`ScreenSummary`.
* :class:`MultiLabelOutputs`: multi-label CDI screening (Zimmermann et al.
  2019): ``file,frame,p_<class>…,<class>…,labels,rule_violation``, no rows
  for failed frames, no hits list, and :class:`CDIScreenSummary`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["ScreenSummary", "CDIScreenSummary", "HitOutputs", "MultiLabelOutputs", "RunFacts", "WARNING"]

#: errors.csv rows starting with this are warnings, not failures: about a frame that was classified all the same,
#: or (frame -1) about a file whose frames were screened (e.g. one still being written)
WARNING = "warning: "


@dataclass
class ScreenSummary:
    """Result of a screening run.

    Attributes
    ----------
    n_frames : int
        Frames screened (errors included).
    n_hit, n_maybe, n_miss, n_error : int
        Frames per label.
    n_warning : int
        Warnings in errors.csv (``warning: ...``, e.g. geometry outside
        physical ranges) about frames that were classified all the same,
        or about a file screened as far as its writer had written it.
    hit_rate : float
        Kept (hit + maybe) / frames classified.
    frames_per_s : float
        Frames classified per second of wall time in this invocation.
    seconds : float
    out_dir : str
    model : str
    resumed_chunks : int
        Chunks taken from an interrupted earlier run.
    """

    n_frames: int = 0
    n_hit: int = 0
    n_maybe: int = 0
    n_miss: int = 0
    n_error: int = 0
    n_warning: int = 0
    hit_rate: float = float("nan")
    frames_per_s: float = float("nan")
    seconds: float = 0.0
    out_dir: str = ""
    model: str = ""
    resumed_chunks: int = 0
    errors: list = field(default_factory=list)

    @property
    def n_kept(self) -> int:
        return self.n_hit + self.n_maybe

    def text(self) -> str:
        """Human-readable summary lines."""
        return (
            f"frames: {self.n_frames}  hits: {self.n_hit}  maybe: {self.n_maybe}  miss: {self.n_miss}  "
            f"errors: {self.n_error}" + (f"  warnings: {self.n_warning}" if self.n_warning else "") + "\n"
            f"hit rate (hit + maybe): {100 * self.hit_rate:.1f}%  speed: {self.frames_per_s:.1f} frames/s  "
            f"({self.seconds:.1f} s)"
        )


@dataclass
class CDIScreenSummary:
    """Result of a multi-label CDI screen.

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


@dataclass
class RunFacts:
    """What the runner knows of a run besides its rows (for the summary).

    Attributes
    ----------
    errors : list of (file, frame, message)
        errors.csv rows, warnings included.
    n_warning : int
        Rows of ``errors`` that are warnings.
    seconds : float
        Wall time of this invocation.
    n_done_now : int
        Frames screened in this invocation (not taken from finished chunks).
    t_work : float
        Seconds spent screening them.
    out_dir, model : str
    resumed_chunks, mpi_ranks : int
    chunks_per_rank : list of int
    """

    errors: list
    n_warning: int
    seconds: float
    n_done_now: int
    t_work: float
    out_dir: str
    model: str
    resumed_chunks: int
    mpi_ranks: int
    chunks_per_rank: list


class HitOutputs:
    """Single-label outputs: ``file,frame,<score_columns>,<metric_columns>,label``, hits.lst, :class:`ScreenSummary`.

    Parameters
    ----------
    score_columns : sequence of str
        The method's score names (``p_hit, p_maybe, p_miss``; ``n_peaks``).
    metric_columns : sequence of str
        Per-frame numbers after the scores (a CNN's ``n_spots, n_spots_no_rings, d_min_A,
        ice_rings, powder_rings, jet_streak``, :data:`diffscreen.preprocess.spots.METRIC_COLUMNS`):
        the cells of the decision's ``metrics`` (``metrics.cells()``), empty
        when the frame has none.
    """

    lineterminator = "\r\n"
    lists_hits = True

    def __init__(self, score_columns, metric_columns=()):
        self.columns = (*score_columns, *metric_columns, "label")
        self._n_metrics = len(metric_columns)
        self._blank = [""] * (len(score_columns) + len(metric_columns))

    def cells(self, d) -> list:
        """scores.csv cells of a decision after ``file,frame``: scores to 6 significant digits, metrics, the label."""
        if not self._n_metrics:
            return [*(f"{v:.6g}" for v in d.scores), d.label]
        m = getattr(d, "metrics", None)
        extra = m.cells() if m is not None else [""] * self._n_metrics
        return [*(f"{v:.6g}" for v in d.scores), *extra, d.label]

    def error_cells(self) -> list:
        """Cells of a frame that failed: blank scores, label ``error``."""
        return [*self._blank, "error"]

    def tally(self) -> "_LabelTally":
        return _LabelTally()

    def summary(self, tally, facts: RunFacts) -> tuple[ScreenSummary, dict]:
        """The run's :class:`ScreenSummary` and its summary.json record."""
        errors = facts.errors
        labels = tally.labels
        classified = sum(labels.values())
        s = ScreenSummary(n_hit=labels["hit"], n_maybe=labels["maybe"], n_miss=labels["miss"],
                          n_error=len(errors) - facts.n_warning, n_warning=facts.n_warning,
                          hit_rate=tally.kept / classified if classified else float("nan"))
        s.n_frames = classified + s.n_error - sum(1 for e in errors if e[1] < 0 and not e[2].startswith(WARNING))
        s.errors = errors
        s.seconds = facts.seconds
        s.frames_per_s = facts.n_done_now / facts.t_work if facts.t_work > 0 and facts.n_done_now else float("nan")
        s.out_dir, s.model, s.resumed_chunks = facts.out_dir, facts.model, facts.resumed_chunks
        record = asdict(s)
        record["errors"] = [{"file": f, "frame": i, "error": e} for f, i, e in errors]
        record["mpi_ranks"] = facts.mpi_ranks
        record["chunks_per_rank"] = facts.chunks_per_rank
        return s, record


class _LabelTally:
    """Frames per label, and frames kept."""

    def __init__(self):
        self.labels, self.kept = Counter(), 0

    def add(self, cells, keep: bool) -> None:
        self.labels[cells[-1]] += 1
        self.kept += keep


class MultiLabelOutputs:
    """Multi-label outputs (CDI): ``file,frame,p_<class>…,<class>…,labels,rule_violation``, :class:`CDIScreenSummary`.

    Parameters
    ----------
    class_names : sequence of str
    threshold : float
        Probability at which a label is set.
    model : str
        The model file (named in summary.json).
    preprocess : dict
        The model's preprocessing recipe (summary.json).
    """

    lineterminator = "\n"
    lists_hits = False

    def __init__(self, class_names, threshold: float, model, preprocess: dict):
        self.names = list(class_names)
        self.threshold, self.model, self.preprocess = threshold, model, preprocess
        self.columns = (*[f"p_{n}" for n in self.names], *self.names, "labels", "rule_violation")

    def cells(self, d) -> list:
        """Probabilities to 6 decimals, the 0/1 labels, the positive names joined by ``;``, the rule violation.

        ``rule_violation`` is 1 when the predicted set breaks a Fig. 2 rule
        (:func:`~diffscreen.evaluate.multilabel.rule_violations`; 0 for a
        model whose classes are not the 11 CDI classes).
        """
        from diffscreen.evaluate.multilabel import rule_violations

        y = d.probabilities >= self.threshold
        bad = bool(rule_violations(y[None])["any"][0]) if len(self.names) == 11 else False
        return [*[f"{x:.6f}" for x in d.probabilities], *[int(b) for b in y], d.label, int(bad)]

    def error_cells(self) -> None:
        """A frame that failed has no scores.csv row (errors.csv only)."""
        return None

    def tally(self) -> "_MultiLabelTally":
        return _MultiLabelTally(len(self.names))

    def summary(self, tally, facts: RunFacts) -> tuple[CDIScreenSummary, dict]:
        """The run's :class:`CDIScreenSummary` and its summary.json record."""
        errors = facts.errors
        n_done = facts.n_done_now if facts.n_done_now else tally.n
        dt = facts.seconds
        s = CDIScreenSummary(
            n_frames=tally.n + len(errors), n_error=len(errors),
            class_counts={n: int(c) for n, c in zip(self.names, tally.counts)},
            violation_rate=tally.violations / tally.n if tally.n else 0.0, seconds=dt,
            frames_per_s=n_done / dt if dt > 0 else 0.0, errors=errors,
        )
        record = {**asdict(s), "errors": len(errors), "task": "cdi", "threshold": self.threshold,
                  "model": self.model, "preprocess": self.preprocess, "class_names": self.names}
        return s, record


class _MultiLabelTally:
    """Frames positive per class, and rule violations, from the cells of :meth:`MultiLabelOutputs.cells`."""

    def __init__(self, n_classes: int):
        self.c = n_classes
        self.counts = np.zeros(n_classes, np.int64)
        self.n = self.violations = 0

    def add(self, cells, keep: bool) -> None:
        self.counts += np.asarray(cells[self.c : 2 * self.c], np.int64)
        self.violations += int(cells[-1])
        self.n += 1
