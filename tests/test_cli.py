"""The command line: help without heavy imports, one-line errors, exit codes."""

import os
import subprocess
import sys

import pytest

from diffscreen.cli import main

COMMANDS = ["screen", "simulate", "train", "evaluate", "demo", "model-info", "explain", "report", "tune-peakfinder8", "benchmark", "adapt", "suggest-labels", "watch", "stream", "replay"]
BENCHMARKS = ["ke2018", "xie2022", "nawaz2022", "zimmermann2019", "generalisation"]


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from diffscreen.cli import main\n"
        "for c in %r:\n"
        "    assert main([c, '--help']) == 0\n"
        "for b in %r:\n"
        "    assert main(['benchmark', b, '--help']) == 0\n"
        "assert 'torch' not in sys.modules and 'h5py' not in sys.modules, sorted(sys.modules)\n" % (COMMANDS, BENCHMARKS)
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Classify every frame" in r.stdout


def _help(*args):
    r = subprocess.run([sys.executable, "-m", *args, "--help"], capture_output=True, text=True,
                       env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


@pytest.mark.parametrize("module", ["diffscreen", "diffscreen.cli"])
def test_every_command_is_listed_however_started(module):
    listed = _help(module)
    assert all(f" {c} " in listed for c in COMMANDS), listed
    benchmarks = _help(module, "benchmark")
    assert all(f" {b} " in benchmarks for b in BENCHMARKS), benchmarks
    assert "--source" in _help(module, "adapt")


def test_help_shows_every_bracketed_text():
    """Rich markup must not swallow help text in brackets ("pip install 'diffscreen[mpi]'", "[default: 20]")."""
    import re

    import typer
    from typer.testing import CliRunner

    from diffscreen.cli import app

    def walk(c, path):
        yield path, c
        for name, sub in getattr(c, "commands", {}).items():
            yield from walk(sub, path + [name])

    bracketed = re.compile(r"\[[A-Za-z#/@][^\]\n]*\]")  # what rich would read as a style tag
    seen, swallowed = 0, []
    for path, cmd in walk(typer.main.get_command(app), []):
        shown = CliRunner().invoke(app, path + ["--help"], env={"COLUMNS": "250"}).output
        shown = " ".join(re.sub(r"[│╭╮╰╯─]", " ", shown).split())  # the panels' borders out, lines joined
        for text in [cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params]:
            for b in bracketed.findall(text):
                seen += 1
                if " ".join(b.split()) not in shown:
                    swallowed.append((" ".join(path), b))
    assert seen >= 10 and not swallowed, swallowed


def test_simulate_positional_output_is_deprecated(tmp_path, capsys):
    assert main(["simulate", str(tmp_path / "old.cxi"), "--frames", "1", "--preset", "wide_hybrid75"]) == 0
    assert "deprecated; use `diffscreen simulate --out" in capsys.readouterr().err
    assert main(["simulate", "--out", str(tmp_path / "new.cxi"), "--frames", "1", "--preset", "wide_hybrid75"]) == 0
    assert "deprecated" not in capsys.readouterr().err
    assert (tmp_path / "old.cxi").exists() and (tmp_path / "new.cxi").exists()
    assert main(["simulate", str(tmp_path / "a.cxi"), "--out", str(tmp_path / "b.cxi")]) == 2
    assert "give the output file once" in capsys.readouterr().err


def test_missing_input_is_one_line_error(tmp_path, capsys):
    code = main(["screen", str(tmp_path / "nope.cbf"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("ERROR: ") and "nope.cbf" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_reader_notes_do_not_reach_the_terminal(tmp_path, capsys, caplog, real_frame):
    """fabio logs a padded TIFF tag of this EPICS areaDetector file on every read; screen shows only its own lines."""
    import logging

    tiff = real_frame("real-frames-2", "Fe3O4C_M1_map_1_P1_E1_001.tif.bz2")
    level = logging.getLogger("fabio").level
    try:
        code = main(["screen", str(tiff), "--out", str(tmp_path / "o")])
    finally:
        logging.getLogger("fabio").setLevel(level)
    err = capsys.readouterr().err
    assert code == 0 and "smaller than expected" not in err
    assert not [r for r in caplog.records if r.name.startswith("fabio")]
    assert (tmp_path / "o" / "scores.csv").read_text().count("\n") == 2


def test_generalisation_peers_only_without_an_earlier_run_is_one_line_error(tmp_path, capsys):
    code = main(["benchmark", "generalisation", "--peers-only", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("ERROR: ") and "generalisation.json" in err and "Traceback" not in err
    assert not (tmp_path / "generalisation.md").exists()
    code = main(["benchmark", "generalisation", "--peers-only", "--recipe", "significance", "--out", str(tmp_path)])
    assert code == 2 and "generalisation_significance.json" in capsys.readouterr().err
    code = main(["benchmark", "generalisation", "--recipe", "fancy", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "unknown recipe 'fancy'" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # refused before any work


def test_bad_model_file_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "m.safetensors"
    bad.write_bytes(b"not a model")
    assert main(["model-info", str(bad)]) == 3  # a model file error is a run error (README, "Exit status")
    err = capsys.readouterr().err
    assert err.startswith("ERROR: ") and "m.safetensors" in err and "Traceback" not in err


def test_unknown_preset_is_refused(tmp_path, capsys):
    assert main(["simulate", "--out", str(tmp_path / "x.cxi"), "--preset", "pilatus-9000"]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert not (tmp_path / "x.cxi").exists()


def test_evaluate_command_matches_the_classifier(tmp_path, capsys):
    import json

    import numpy as np
    import torch

    from diffscreen.evaluate import evaluate_labels
    from diffscreen.io import open_source
    from diffscreen.models import get_model, save_model
    from diffscreen.models.decision import decide
    from diffscreen.models.inference import Classifier
    from diffscreen.preprocess import PreprocessConfig
    from toyrun import write_toy_run

    labels = ["hit", "miss", "maybe", "miss", "hit", "miss", "miss"]
    run = str(write_toy_run(tmp_path / "run.cxi", labels, seed=3))
    torch.manual_seed(1)
    model = save_model(tmp_path / "m.safetensors", get_model("ke2018", input_size=256).eval(), arch="ke2018",
                       arch_kwargs={"input_size": 256}, preprocess=PreprocessConfig(out_size=256, fallback_size=256),
                       class_names=("hit", "maybe", "miss"))
    assert main(["evaluate", run, "--model", str(model), "--batch-size", "3", "--out", str(tmp_path / "rep")]) == 0
    assert "Ke Table 3" in capsys.readouterr().out
    rep = json.loads((tmp_path / "rep.json").read_text())
    with open_source(run) as src:
        _, pred = decide(Classifier(model).predict([src.read(i) for i in range(len(src))]))
    expected = evaluate_labels(labels, pred)
    assert rep["confusion"] == expected.confusion.tolist()
    assert np.isclose(rep["metrics"]["accuracy"], expected.metrics["accuracy"])
    assert (tmp_path / "rep.md").read_text().startswith("**3-class confusion")


def test_live_commands_pass_min_spots_to_the_method():
    from diffscreen.cli.live import _loop_options

    opts = _loop_options(None, 4, 1, 8, 1.0, True, False, None, 0, 10**8, min_spots=0)
    assert opts["method"].min_spots == 0 and opts["method"].identity.endswith(":metrics=kept")
    assert "method" not in _loop_options(None, 4, 1, 8, 1.0, True, False, None, 0, 10**8)  # the default gate
