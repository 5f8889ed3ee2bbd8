"""Issue 18: one bad file, frame, model or disk never costs the run; nothing is silently dropped.

Each test builds the failure it is about and checks the contract: an error
row naming the file and frame (the run goes on), a one-line error with the
documented exit status, no temporary file left, strict JSON, and the same
answer for a frame whatever else is on the command line.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from diffscreen.cli import app
from diffscreen.errors import ModelFileError, OutputError
from diffscreen.io.outdir import OutputLock
from diffscreen.models import load_model
from diffscreen.models._api import default_model_path
from diffscreen.screen import screen
from diffscreen.screen.method import FrameDecision
from diffscreen.screen.pipeline import predict_source
from diffscreen.screen.runner import strict_json

from toyrun import write_toy_model, write_toy_run

LABELS = ["hit", "miss", "maybe", "miss", "hit", "miss"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return write_toy_model(tmp_path_factory.mktemp("model") / "m.safetensors")


@pytest.fixture()
def run(tmp_path):
    return str(write_toy_run(tmp_path / "run.cxi", LABELS, seed=5))


def rows_of(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def strict(path):
    """Parse with a strict JSON parser (NaN and Infinity refused)."""

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(Path(path).read_text(), parse_constant=refuse)


def float_h5(path, frames):
    with h5py.File(path, "w") as f:
        f["data"] = np.asarray(frames, np.float32)
    return f"{path}:/data"


# --- the firewall ----------------------------------------------------------------------------------------


def test_a_library_exception_in_one_file_is_its_error_row(run, model_file, tmp_path, monkeypatch):
    """Any exception (here h5py's KeyError and numpy's ValueError) becomes error rows; other files are screened."""
    import diffscreen.screen.runner as runner

    bad_open = str(tmp_path / "bad_open.h5")
    bad_read = str(write_toy_run(tmp_path / "bad_read.cxi", ["hit", "miss"], seed=6))
    Path(bad_open).write_bytes(b"x")
    real_open = runner.open_source

    def fake_open(spec):
        if spec == bad_open:
            raise KeyError("Unable to synchronously open object (can't open file)")
        src = real_open(spec)
        if spec == bad_read:
            def read(i, _r=src.read):
                if i == 1:
                    raise ValueError("operands could not be broadcast together")
                return _r(i)
            src.read = read
            src.read_region = lambda *a: (_ for _ in ()).throw(ValueError("operands could not be broadcast"))
        return src

    monkeypatch.setattr(runner, "open_source", fake_open)
    out = tmp_path / "out"
    s = screen([run, bad_open, bad_read, run], out, model=model_file, batch_size=4, chunk_size=5)
    rows = rows_of(out / "scores.csv")
    good = [r for r in rows if r["file"] == run]
    assert len(good) == 2 * len(LABELS) and all(r["label"] in ("hit", "maybe", "miss") for r in good)
    errs = rows_of(out / "errors.csv")
    assert any(e["file"] == bad_open and e["frame"] == "-1" and "KeyError" in e["error"] for e in errs)
    assert {(e["file"], e["frame"]) for e in errs if e["file"] == bad_read} == {(bad_read, "0"), (bad_read, "1")}
    assert s.n_error == 3 and s.n_frames == 2 * len(LABELS) + 2


def test_nonfinite_probability_is_an_error_never_a_label(run, tmp_path):
    """A method that answers NaN for a frame gets an error row for it (never 'miss')."""

    class NaNOnOdd:
        class_names = ("hit", "maybe", "miss")
        score_columns = ("p_hit", "p_maybe", "p_miss")
        identity = "nan-on-odd"

        def classify(self, frames):
            out = []
            for fr in frames:
                p = np.array([0.1, 0.1, 0.8], np.float32)
                if fr.meta.index % 2:
                    p[:] = np.nan
                out.append(FrameDecision(tuple(map(float, p)), "miss", False, p))
            return out

    out = tmp_path / "out"
    s = screen([run], out, method=NaNOnOdd())
    rows = rows_of(out / "scores.csv")
    assert [r["label"] for r in rows] == ["miss", "error"] * (len(LABELS) // 2)
    assert s.n_error == len(LABELS) // 2 and s.n_miss == len(LABELS) // 2
    assert all("non-finite" in e["error"] for e in rows_of(out / "errors.csv"))


@pytest.mark.parametrize("name", ["default", "fast"])
def test_one_huge_finite_pixel_does_not_make_nan(name, tmp_path):
    """A 1e21 float32 pixel overflowed the fast GCN (NaN scores labelled miss); now finite and as the reference says."""
    a = np.random.default_rng(1).poisson(20, (2, 512, 512)).astype("f4")
    a[1, 256, 256] = 1e21
    spec = float_h5(tmp_path / "big.h5", a)
    from diffscreen.models.inference import Classifier

    with __import__("diffscreen.io", fromlist=["open_source"]).open_source(spec) as src:
        fast, err = predict_source(Classifier(name), src)
        ref, _ = predict_source(Classifier(name, fast=False), src)
    assert not err and np.isfinite(fast).all()
    np.testing.assert_allclose(fast, ref, atol=2e-3)


# --- model files ------------------------------------------------------------------------------------------


def _mutated(tmp_path, name, *, record=None, edit=None, weights=None):
    """A copy of the bundled fast model with its metadata record replaced or edited."""
    src = default_model_path("fast")
    from safetensors import safe_open

    with safe_open(str(src), "pt") as f:
        rec = json.loads(f.metadata()["diffscreen"])
    state = load_file(str(src))
    if edit:
        edit(rec)
    if weights:
        weights(state)
    path = tmp_path / f"{name}.safetensors"
    save_file(state, str(path), metadata={"diffscreen": json.dumps(rec if record is None else record)})
    return path


def _nan_weight(state):
    k = next(k for k, t in state.items() if t.is_floating_point())
    state[k][0] = float("nan")


MODEL_CASES = {
    "list-record": (dict(record=[1, 2, 3]), "JSON list"),
    "format-99": (dict(edit=lambda r: r.update(format_version=99)), "format_version 99"),
    "num-classes-negative": (dict(edit=lambda r: r["arch_kwargs"].update(num_classes=-1)), "num_classes = -1"),
    "input-size-40000": (dict(edit=lambda r: r["arch_kwargs"].update(input_size=40000)), "input_size = 40000"),
    "out-size-40000": (dict(edit=lambda r: r["preprocess"].update(out_size=40000)), "out_size = 40000"),
    "nan-weights": (dict(weights=_nan_weight), "NaN or inf"),
    "duplicate-classes": (dict(edit=lambda r: r.update(class_names=["hit", "hit", "miss"])), "unique"),
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_a_bad_model_file_is_refused_on_load(case, tmp_path):
    kwargs, words = MODEL_CASES[case]
    path = _mutated(tmp_path, case, **kwargs)
    with pytest.raises(ModelFileError) as exc:
        load_model(path)
    assert words in str(exc.value) and str(path) in str(exc.value)


def test_a_model_without_a_miss_class_cannot_screen(run, tmp_path):
    path = _mutated(tmp_path, "no-miss", edit=lambda r: r.update(class_names=["hit", "maybe", "blank"]))
    load_model(path)  # a valid model file, but not a hit/maybe/miss model
    with pytest.raises(ModelFileError, match="lack 'miss'"):
        screen([run], tmp_path / "out", model=path)
    res = CliRunner().invoke(app, ["screen", run, "--out", str(tmp_path / "o2"), "--model", str(path)])
    assert res.exit_code == 3 and "lack 'miss'" in res.output and "Traceback" not in res.output


# --- the output folder ------------------------------------------------------------------------------------


def test_a_second_run_into_a_locked_folder_is_refused(run, model_file, tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out.mkdir()
        (out / ".diffscreen.lock").write_text(f"{holder.pid} {os.uname().nodename}\n")
        with pytest.raises(OutputError, match=f"PID {holder.pid}"):
            screen([run], out, model=model_file)
        assert (out / ".diffscreen.lock").exists() and not (out / "scores.csv").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder is dead now: its lock is stale and is taken over, then released
    s = screen([run], out, model=model_file)
    assert s.n_frames == len(LABELS) and not (out / ".diffscreen.lock").exists()


def test_lock_is_exclusive_within_a_process(tmp_path):
    a = OutputLock(tmp_path / "o").acquire()
    other = OutputLock(tmp_path / "o")
    other._holder = lambda: (os.getppid(), os.uname().nodename)  # as if the parent held it
    (tmp_path / "o" / ".diffscreen.lock").write_text(f"{os.getppid()} {os.uname().nodename}\n")
    with pytest.raises(OutputError, match="another diffscreen run"):
        other.acquire()
    a.release()


def test_stale_outputs_and_part_files_are_removed(run, model_file, tmp_path):
    out = tmp_path / "out"
    screen([run], out, model=model_file)
    assert (out / "hits.cxi").exists()
    for junk in (out / ".hits.cxi.part-99999", out / ".scores.csv.part-12", out / ".partial" / ".chunk_000000.cxi.part-7"):
        junk.parent.mkdir(exist_ok=True)
        junk.write_bytes(b"0" * 1000)
    screen([run], out, model=model_file, write_cxi=False)
    assert not (out / "hits.cxi").exists(), "--no-cxi must not leave the previous run's hits.cxi"
    assert not list(out.rglob("*.part-*"))


def test_summary_is_strict_json_when_nothing_was_classified(tmp_path, model_file):
    bad = tmp_path / "zeros.h5"
    spec = float_h5(bad, np.zeros((2, 300, 300)))  # empty readouts: every frame is an error
    screen([spec], tmp_path / "out", model=model_file)
    rec = strict(tmp_path / "out" / "summary.json")
    assert rec["hit_rate"] is None and rec["n_error"] == 2
    assert json.loads(strict_json({"a": float("nan"), "b": [np.float32(np.inf), 1.5]})) == {"a": None, "b": [None, 1.5]}


def test_disk_full_is_a_run_error_that_leaves_nothing(run, model_file, tmp_path, monkeypatch):
    """Not enough space for hits.cxi: OutputError before HDF5 writes, no .part file, nothing to resume."""
    import diffscreen.io.outdir as outdir

    class Usage:
        free = 1 << 20

    monkeypatch.setattr(outdir.shutil, "disk_usage", lambda p: Usage)
    out = tmp_path / "out"
    with pytest.raises(OutputError, match="disk full"):
        screen([run], out, model=model_file)
    assert sorted(p.name for p in out.rglob("*")) == []


def _can_mount_tmpfs(path) -> bool:
    if os.geteuid() != 0:
        return False
    path.mkdir(exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


def test_a_3mb_tmpfs_gives_exit_3_and_an_empty_file_system(run, model_file, tmp_path):
    mnt = tmp_path / "full"
    if not _can_mount_tmpfs(mnt):
        pytest.skip("needs root and tmpfs mounts")
    try:
        r = subprocess.run([sys.executable, "-m", "diffscreen", "screen", run, "--model", str(model_file),
                            "--out", str(mnt / "out")], capture_output=True, text=True, timeout=300)
        used = os.statvfs(mnt)
        assert r.returncode == 3, r.stderr
        assert "Traceback" not in r.stderr and "disk full" in r.stderr
        assert [ln for ln in r.stderr.splitlines() if ln.startswith("ERROR")].__len__() == 1
        assert (used.f_blocks - used.f_bfree) * used.f_frsize <= 8192, "temporary files left on the full disk"
    finally:
        subprocess.run(["umount", str(mnt)])


KILL_IN_MERGE = textwrap.dedent("""
    import os, signal, sys, torch
    torch.set_num_threads(1)
    import diffscreen.io.cxi as cxi
    real = cxi._merge_entry
    calls = []
    def merge_then_die(*a, **k):
        real(*a, **k)
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    cxi._merge_entry = merge_then_die
    from diffscreen.screen import screen
    screen(sys.argv[1:-1], sys.argv[-1], model=os.environ["MODEL"], chunk_size=2, batch_size=2)
""")

RUN_ALL = textwrap.dedent("""
    import os, sys, torch
    torch.set_num_threads(1)
    from diffscreen.screen import screen
    screen(sys.argv[1:-1], sys.argv[-1], model=os.environ["MODEL"], chunk_size=2, batch_size=2)
""")


@pytest.mark.slow
@pytest.mark.ci_slow
def test_kill_during_the_merge_then_resume_gives_identical_outputs(run, model_file, tmp_path):
    env = {**os.environ, "MODEL": str(model_file)}
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    subprocess.run([sys.executable, "-c", RUN_ALL, run, str(clean)], env=env, check=True, timeout=300)
    r = subprocess.run([sys.executable, "-c", KILL_IN_MERGE, run, str(killed)], env=env, timeout=300)
    assert r.returncode == -signal.SIGKILL
    assert list(killed.glob(".*.part-*")), "the kill should leave a temporary merge file"
    subprocess.run([sys.executable, "-c", RUN_ALL, run, str(killed)], env=env, check=True, timeout=300)
    assert not list(killed.rglob("*.part-*")) and not (killed / ".partial").exists()
    for name in ("scores.csv", "hits.lst", "errors.csv", "hits.cxi"):
        assert (killed / name).read_bytes() == (clean / name).read_bytes(), name


# --- one path, one answer; exit statuses ------------------------------------------------------------------


def test_a_frame_gets_the_same_answer_alone_or_with_others(run, tmp_path):
    """NaN pixels outside the crop window: classified alone and in company alike (one path per file)."""
    from diffscreen.io import CXIWriter, FrameMeta

    a = np.random.default_rng(3).poisson(5, (1200, 1200)).astype("f4")
    a[:3, :3] = np.nan  # a corner the fast model's centre window never reaches
    spec = str(tmp_path / "nan_corner.cxi")
    with CXIWriter(spec) as w:
        w.append(a, FrameMeta(source="sim"), mask=np.zeros(a.shape, bool))
    alone = screen([spec], tmp_path / "alone", model="fast", batch_size=4)
    mixed = screen([run, spec, run], tmp_path / "mixed", model="fast", batch_size=4)
    row = [r for r in rows_of(tmp_path / "alone" / "scores.csv")]
    row_m = [r for r in rows_of(tmp_path / "mixed" / "scores.csv") if r["file"] == spec]
    assert row[0]["label"] == row_m[0]["label"] != "error"
    assert abs(float(row[0]["p_miss"]) - float(row_m[0]["p_miss"])) < 1e-5
    assert alone.n_error == mixed.n_error == 0


def test_exit_statuses(run, model_file, tmp_path, monkeypatch):
    cli = CliRunner()
    bad = tmp_path / "bad.cbf"
    bad.write_bytes(b"###CBF: VERSION 1.5\n garbage")
    m = str(model_file)
    assert cli.invoke(app, ["screen", run, "--model", m, "--out", str(tmp_path / "a")]).exit_code == 0
    assert cli.invoke(app, ["screen", run, str(bad), "--model", m, "--out", str(tmp_path / "b")]).exit_code == 1
    r = cli.invoke(app, ["screen", run, "--model", m, "--out", str(tmp_path / "c"), "--threads", "-3"])
    assert r.exit_code == 2 and "threads" in r.output
    (tmp_path / "file").write_text("x")
    r = cli.invoke(app, ["screen", run, "--model", m, "--out", str(tmp_path / "file")])
    assert r.exit_code == 3 and "not a folder" in r.output
    import diffscreen.screen as screen_pkg

    monkeypatch.setattr(screen_pkg, "screen", lambda *a, **k: 1 / 0)
    r = cli.invoke(app, ["screen", run, "--model", m, "--out", str(tmp_path / "d")])
    assert r.exit_code == 4 and "internal error (ZeroDivisionError" in r.output and "Traceback" not in r.output


def test_cli_refuses_bad_arguments_without_a_traceback(run, tmp_path):
    cli = CliRunner()
    r = cli.invoke(app, ["train", run, "--out", str(tmp_path / "m.safetensors"), "--input-size", "128",
                         "--epochs", "1", "--batches-per-epoch", "1"])
    assert r.exit_code == 2 and "too small" in r.output and "Traceback" not in r.output
    scores = tmp_path / "scores.csv"
    for text, words in [("garbage,\n1,2\n", "lacks file"), ("file,frame,label\nx,abc,hit\n", "not an integer"),
                        ("file,frame,label\nx,1\n", "2 fields"), ("", "empty")]:
        scores.write_text(text)
        r = cli.invoke(app, ["evaluate", run, "--scores", str(scores)])
        assert r.exit_code == 2 and words in r.output and "Traceback" not in r.output, (text, r.output)


def test_absurd_geometry_is_a_warning_and_treated_as_unknown(tmp_path):
    """Pixel size 1e-12 m and distance 0: classified as if unknown, with a warning row each (exit status 0)."""
    from diffscreen.io import CXIWriter, FrameMeta

    a = np.random.default_rng(3).poisson(5, (1000, 1000)).astype("u2")
    metas = [FrameMeta(source="x", pixel_size_mm=1e-9, distance_mm=100, wavelength_A=1.0, beam_centre_px=(500, 500)),
             FrameMeta(source="x", pixel_size_mm=0.1, distance_mm=0, wavelength_A=1.0, beam_centre_px=(500, 500)),
             FrameMeta(source="x", beam_centre_px=(500, 500))]  # geometry unknown: the reference
    spec = str(tmp_path / "geo.cxi")
    with CXIWriter(spec, mask_mode="per_frame") as w:
        for m in metas:
            w.append(a, m, mask=np.zeros(a.shape, bool))
    res = CliRunner().invoke(app, ["screen", spec, "--model", "fast", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "WARNING: " in res.output and "Traceback" not in res.output
    rows = rows_of(tmp_path / "o" / "scores.csv")
    assert len({r["p_miss"] for r in rows}) == 1, "an absurd value must act as an unknown one"
    errs = rows_of(tmp_path / "o" / "errors.csv")
    assert [(e["frame"], e["error"].split()[1]) for e in errs] == [("0", "pixel_size_mm"), ("1", "distance_mm")]
    assert all(e["error"].startswith("warning: ") for e in errs)
    rec = strict(tmp_path / "o" / "summary.json")
    assert rec["n_warning"] == 2 and rec["n_error"] == 0 and rec["n_frames"] == 3
