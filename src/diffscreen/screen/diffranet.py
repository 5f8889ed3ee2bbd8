"""Screening with a DiffraNet 5-class model (``screen --task diffranet``; Nawaz et al. 2022).

Each frame gets the five softmax probabilities (scores.csv columns
``p_blank,p_no-crystal,p_weak,p_good,p_strong``) and its most probable class
as label; it is kept (hits.lst, hits.cxi) when that class is weak, good or
strong (Nawaz §4: blank and no-crystal are misses).  Frames go through the
same reading and preprocessing path as the hit/maybe/miss CNN
(:func:`~diffscreen.screen.pipeline.predict_source`), with the recipe stored
in the model file.  summary.json counts hits (weak + good + strong) and
misses (blank + no-crystal), and each class under ``class_counts``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from diffscreen.errors import ConfigError
from diffscreen.models.diffranet import DIFFRANET_CLASSES, DIFFRANET_HITS, is_diffranet_model
from diffscreen.screen.method import CNNMethod, FrameDecision, _file_identity
from diffscreen.screen.outputs import HitOutputs, ScreenSummary

__all__ = ["DiffraNetMethod", "DiffraNetOutputs", "DiffraNetSummary", "check_diffranet_model"]


def check_diffranet_model(class_names, path=None) -> None:
    """Refuse a model whose outputs are not the five DiffraNet classes (one line, a usage error).

    Raises
    ------
    ConfigError
        E.g. a hit/maybe/miss model given to ``screen --task diffranet``.
    """
    if not is_diffranet_model(class_names):
        raise ConfigError(f"the model's classes are {', '.join(class_names)}, not the DiffraNet classes "
                          f"{', '.join(DIFFRANET_CLASSES)}; screen --task diffranet needs a model from "
                          "`diffscreen train --task diffranet`", path=path)


@dataclass
class DiffraNetSummary(ScreenSummary):
    """:class:`~diffscreen.screen.outputs.ScreenSummary` of a DiffraNet screen: ``n_hit`` counts weak, good and
    strong frames, ``n_miss`` blank and no-crystal ones (``n_maybe`` is 0), ``class_counts`` each class."""

    class_counts: dict = field(default_factory=dict)

    def text(self) -> str:
        counts = "  ".join(f"{c}: {self.class_counts.get(c, 0)}" for c in DIFFRANET_CLASSES)
        return (f"frames: {self.n_frames}  {counts}  errors: {self.n_error}"
                + (f"  warnings: {self.n_warning}" if self.n_warning else "") + "\n"
                f"hit rate (weak + good + strong): {100 * self.hit_rate:.1f}%  speed: {self.frames_per_s:.1f} "
                f"frames/s  ({self.seconds:.1f} s)")


class _Merged:
    """A label tally seen as hit/miss (what :meth:`HitOutputs.summary` counts)."""

    def __init__(self, tally):
        self.labels, self.kept = Counter(), tally.kept
        for label, n in tally.labels.items():
            self.labels["hit" if label in DIFFRANET_HITS else "miss" if label in DIFFRANET_CLASSES else label] += n


class DiffraNetOutputs(HitOutputs):
    """scores.csv ``file,frame,p_<class>…,label``, hits.lst of the kept frames, :class:`DiffraNetSummary`."""

    def summary(self, tally, facts):
        s, record = super().summary(_Merged(tally), facts)
        counts = {c: int(tally.labels.get(c, 0)) for c in DIFFRANET_CLASSES}
        s = DiffraNetSummary(**asdict(s), class_counts=counts)
        record.update(task="diffranet", class_counts=counts, n_maybe=0)
        return s, record


class DiffraNetMethod(CNNMethod):
    """A DiffraNet 5-class classifier as a screening method.

    Frames are read and classified as by :class:`~diffscreen.screen.method.CNNMethod`
    (its ``classify_source``), without the per-frame numbers or the spot gate;
    only the decision (the most probable class, kept when weak, good or strong)
    differs.

    Parameters
    ----------
    clf : Classifier
        Of a model from ``train --task diffranet`` (fast or reference path, any device).

    Raises
    ------
    ConfigError
        The model's classes are not the five DiffraNet classes.
    """

    def __init__(self, clf):
        check_diffranet_model(tuple(clf.class_names), clf.bundle.path)
        self.clf, self.metrics, self.min_spots = clf, "none", 0
        self.class_names = tuple(clf.class_names)
        self.score_columns = tuple(f"p_{c}" for c in self.class_names)
        self.outputs = DiffraNetOutputs(self.score_columns)
        self.path = clf.bundle.path
        self.identity = f"{_file_identity(self.path)}:diffranet"

    def _decisions(self, probs) -> list[FrameDecision]:
        labels = [self.class_names[k] for k in np.asarray(probs).argmax(1)] if len(probs) else []
        return [FrameDecision(tuple(float(v) for v in p), lab, lab in DIFFRANET_HITS, p)
                for p, lab in zip(probs, labels)]
