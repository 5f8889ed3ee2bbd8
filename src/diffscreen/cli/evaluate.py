"""``diffscreen evaluate``: confusion matrices and metrics of a model, or of a ``scores.csv``, against labels."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from diffscreen.cli._common import MODEL_HELP, Bar, Task, device_of, device_option, expand, friendly, progress


@friendly
def evaluate(
    inputs: List[str] = typer.Argument(None, help="Labelled frame files (simulated .cxi runs carry their labels)."),
    labels: List[Path] = typer.Option([], "--labels", "-l", help="Label files (expert_annotation.txt, CSV)."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    scores: Optional[Path] = typer.Option(None, help="Score an existing scores.csv instead of running a model."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the report here (.json and .md beside it)."),
    batch_size: int = typer.Option(16, min=1, help="Frames per forward pass."),
    task: Task = typer.Option(Task.crystallography, help="cdi: score a `screen --task cdi` scores.csv against simulated CDI runs."),
    device: Optional[str] = device_option(),
):
    """Confusion matrices (3-class and Hit-or-Maybe vs Miss, Ke Table 3), precision, recall, accuracy.

    With --task cdi: give the simulated CDI runs and --scores OUT/scores.csv
    of `screen --task cdi`; prints the multi-label accuracy, precision and
    recall (Zimmermann et al. 2019 §3.2) beside the all-negative predictor,
    per class, and the rate of label sets that break a Fig. 2 rule.
    """
    import json

    from diffscreen.evaluate import evaluate_labels
    from diffscreen.evaluate.labelled import labels_for_scores
    from diffscreen.io.atomic import atomic_write_text

    dev = device_of(device) if scores is None else None  # only a model run needs one; refused before any work
    if task is Task.diffranet:
        from diffscreen.errors import ConfigError

        raise ConfigError("evaluate scores hit/maybe/miss (--task crystallography) or CDI labels; the DiffraNet "
                          "task's test split is scored by `train --task diffranet`")
    if task is Task.cdi:
        from diffscreen.errors import ConfigError
        from diffscreen.evaluate.multilabel import cdi_report_markdown, evaluate_cdi_scores

        if scores is None or not inputs:
            raise ConfigError("--task cdi needs the simulated runs and --scores OUT/scores.csv of `screen --task cdi`")
        res = evaluate_cdi_scores(scores, expand(inputs))
        text = cdi_report_markdown(res)
        print(text)
        if out is not None:
            atomic_write_text(Path(out).with_suffix(".json"), json.dumps(res, indent=2, default=float))
            atomic_write_text(Path(out).with_suffix(".md"), text + "\n")
        return

    if scores is not None:
        true, pred = labels_for_scores(scores, inputs or [], labels)
    else:
        if not inputs:
            from diffscreen.errors import ConfigError

            raise ConfigError("give labelled input files, or --scores scores.csv")
        true, pred = _predict(expand(inputs), labels, model, batch_size, dev)
    rep = evaluate_labels(true, pred)
    text = rep.to_markdown()
    print(text)
    if out is not None:
        out = Path(out)
        atomic_write_text(out.with_suffix(".json"), json.dumps(rep.to_dict(), indent=2, default=float))
        atomic_write_text(out.with_suffix(".md"), text + "\n")
        print(f"report written to {out.with_suffix('.json')} and {out.with_suffix('.md')}")


def _predict(specs, labels, model, batch_size, device=None):
    """True and decided labels of the labelled frames of ``specs``, with a progress bar."""
    from diffscreen.evaluate.labelled import predict_labelled
    from diffscreen.models.inference import Classifier
    from diffscreen.train import collect_samples

    samples, _ = collect_samples(specs, [str(x) for x in labels])
    clf = Classifier(model, device=device)
    with progress() as p:
        return predict_labelled(samples, clf, batch_size=batch_size, progress=Bar(p, "evaluating"))
