"""The command line: help without heavy imports, one-line errors, exit codes."""

import subprocess
import sys

import pytest

from diffscreen.cli import main

COMMANDS = ["screen", "simulate", "train", "evaluate", "demo", "model-info"]


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from diffscreen.cli import main\n"
        "for c in %r:\n"
        "    assert main([c, '--help']) == 0\n"
        "assert 'torch' not in sys.modules and 'h5py' not in sys.modules, sorted(sys.modules)\n" % COMMANDS
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Classify every frame" in r.stdout


def test_missing_input_is_one_line_error(tmp_path, capsys):
    code = main(["screen", str(tmp_path / "nope.cbf"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("ERROR: ") and "nope.cbf" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_bad_model_file_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "m.safetensors"
    bad.write_bytes(b"not a model")
    assert main(["model-info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ERROR: ") and "m.safetensors" in err and "Traceback" not in err


def test_unknown_preset_is_refused(tmp_path, capsys):
    assert main(["simulate", str(tmp_path / "x.cxi"), "--preset", "pilatus-9000"]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert not (tmp_path / "x.cxi").exists()
