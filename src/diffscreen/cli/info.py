"""``diffscreen model-info``: what a model file says about itself."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from diffscreen.cli._common import MODEL_HELP, friendly


@friendly
def model_info(model: Optional[Path] = typer.Argument(None, help=MODEL_HELP)):
    """Print a model file's architecture, preprocessing, classes, training data and metrics."""
    import json

    from diffscreen.models import read_model_metadata, resolve_model_path

    path = resolve_model_path(model)
    rec = read_model_metadata(path)
    train = rec.get("training", {})
    short = {k: v for k, v in rec.items() if k != "training"}
    short["training"] = {k: v for k, v in train.items() if k != "history"}
    print(f"{path}")
    print(json.dumps(short, indent=2, default=float))
