"""Issue 18, "Fuzzing": a corpus of bad inputs (tests/corpus.py) never stops a run or costs a good frame.

File cases run among good frames: in one in-process screen per group of
formats (good, bad1, good, bad2, ...), singly between two good frames (one
frame per batch) for the issue's cases and one of each kind, through the CLI
(``main()``) for a sample, and through the CLI in a subprocess with RLIMIT_AS
and a timeout for the ones that may hang, blow up memory or crash in C (see
``Case.hazard`` in tests/corpus.py).  The contract (issue 18, "What to build"):

* a bad file's frames are ``label=error`` rows, or one file-level error, and
  errors.csv names the file; the run goes on and exits 1;
* the good frames get hit/maybe/miss with finite probabilities, the same as
  when screened alone;
* no row with a non-finite probability has a hit/maybe/miss label;
* summary.json is strict JSON; no traceback, ever;
* a bad model file: one ``ERROR:`` line, exit 3, and no code in it runs;
* a bad label or scores file: one ``ERROR:`` line and exit 2, or read correctly.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus  # noqa: E402

MODEL = "fast"  # the bundled fast model: 2.5x quicker than the default
LABELS = ("hit", "maybe", "miss")
HAZARD_TIMEOUT_S = 60
HAZARD_RLIMIT_AS = 4 << 30  # a safety net; the check is the peak RSS below
HAZARD_PEAK_RSS_MIB = 1536  # torch and two small good frames need ~600 MiB; a bad file must add little
EXIT_PARTIAL, EXIT_USAGE, EXIT_RUN = 1, 2, 3

# Single cases put between two good frames in their own run (the issue's cases and one of each kind).
SINGLE = (
    "cxi_mask_wrong_shape", "cxi_external_missing", "pixel_1e21", "pixel_f32max", "geom_pixel_1e-12",
    "geom_distance_0", "geom_beam_nan", "geom_absurd_cbf", "nan_outside_crop", "trunc_cxi_1000", "trunc_minicbf_600",
    "noise_hdf5", "h5_string", "h5_empty", "cxi_corrupt_chunk", "symlink_loop", "directory_named_cbf",
)
# A sample run through the CLI (main()), all in one command line.
CLI_SAMPLE = ("cxi_mask_wrong_shape", "pixel_1e21", "trunc_smv_600", "empty_h5", "noise_tiff",
              "text_named_cbf", "h5_compound", "bz2_corrupt")

_CASES_CACHE: dict = {}


def _all_cases() -> list:
    """The corpus, built once per process into a temporary folder (for parametrisation)."""
    if "cases" not in _CASES_CACHE:
        import atexit
        import shutil
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="diffscreen-corpus-"))
        atexit.register(shutil.rmtree, folder, True)
        _CASES_CACHE["folder"] = folder
        _CASES_CACHE["cases"] = corpus.build_corpus(folder)
    return _CASES_CACHE["cases"]


def _cases(category, *, hazard=(None,), names=None):
    """Cases of a category whose hazard is one of ``hazard`` (default: none), optionally by name."""
    out = [c for c in _all_cases() if c.category == category and c.hazard in hazard]
    if names is not None:
        by = {c.name: c for c in out}
        out = [by[n] for n in names if n in by]
    return out


def _ids(cases):
    return [c.name for c in cases]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def folder():
    _all_cases()
    return _CASES_CACHE["folder"]


@pytest.fixture(scope="module")
def good(folder):
    return corpus.good_frame(folder)


@pytest.fixture(scope="module")
def goods(folder, good):
    """``goods(k)``: a distinct path (symlink) to the good frame for slot k, so that every slot is its own
    input; ``goods(k, small=True)``: to the small synthetic good frame (quick to read, for long runs)."""
    d = folder / "goods"
    d.mkdir(exist_ok=True)
    small = corpus.small_good_frame(folder)

    def make(k, small_frame=False):
        target = small if small_frame else good
        p = d / f"good_{'small_' if small_frame else ''}{k:03d}{Path(target).suffix}"
        if not p.is_symlink():
            os.symlink(target, p)
        return str(p)

    return make


@pytest.fixture(scope="module")
def reference(folder, good, tmp_path_factory):
    """Probabilities of the good frames screened alone: {target path: [p_hit, p_maybe, p_miss]}."""
    from diffscreen.screen import screen

    ref = {}
    for target in (good, corpus.small_good_frame(folder)):
        out = tmp_path_factory.mktemp("reference")
        screen([target], out, model=MODEL, resume=False)
        rows = _scores(out)
        assert len(rows) == 1 and rows[0]["label"] in LABELS, rows
        ref[os.path.realpath(target)] = _probs(rows[0])
    return ref


# --------------------------------------------------------------------------- output checks


def _scores(out) -> list[dict]:
    with open(Path(out) / "scores.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _errors(out) -> list[dict]:
    p = Path(out) / "errors.csv"
    if not p.exists():
        return []
    with open(p, newline="") as fh:
        return list(csv.DictReader(fh))


def _probs(row) -> list[float]:
    vals = []
    for k in ("p_hit", "p_maybe", "p_miss"):
        try:
            vals.append(float(row.get(k) or "nan"))
        except ValueError:
            vals.append(float("nan"))
    return vals


def _strict_json(path):
    def no_constant(name):
        raise ValueError(f"{path.name} holds {name}, which strict JSON parsers reject")

    return json.loads(Path(path).read_text(), parse_constant=no_constant)


def _check_outputs(out) -> list[str]:
    """Run-wide checks: labels known, finite probabilities wherever a label is given, strict summary.json."""
    problems = []
    for r in _scores(out):
        if r["label"] not in LABELS + ("error",):
            problems.append(f"unknown label {r['label']!r} in {r}")
        elif r["label"] in LABELS:
            p = _probs(r)
            if not all(math.isfinite(v) and -1e-6 <= v <= 1 + 1e-6 for v in p) or abs(sum(p) - 1) > 1e-3:
                problems.append(f"{r['file']} frame {r['frame']}: label {r['label']} with probabilities {p}")
    try:
        _strict_json(Path(out) / "summary.json")
    except (OSError, ValueError) as exc:
        problems.append(f"summary.json: {exc}")
    return problems


def _check_good(out, good_specs, reference) -> list[str]:
    """Every good slot: one hit/maybe/miss row with the probabilities it gets alone."""
    rows = _scores(out)
    problems = []
    for spec in good_specs:
        mine = [r for r in rows if r["file"] == spec]
        if len(mine) != 1 or mine[0]["label"] not in LABELS:
            problems.append(f"good frame {Path(spec).name}: rows {[(r['frame'], r['label']) for r in mine]}")
            continue
        p, ref = _probs(mine[0]), reference.get(os.path.realpath(spec))
        if ref is not None and max(abs(a - b) for a, b in zip(p, ref)) > 1e-3:
            problems.append(f"good frame {Path(spec).name}: probabilities {p} differ from alone {ref}")
    return problems


def _check_case(case, out) -> list[str]:
    """The contract for one bad file case in a finished run's outputs."""
    spec = case.path
    rows = [r for r in _scores(out) if r["file"] == spec]
    errs = [e for e in _errors(out) if e["file"] == spec]
    where = f"{case.name}"
    if not rows:
        return [f"{where}: no row in scores.csv (silently dropped)"]
    problems = []
    labelled = {int(r["frame"]) for r in rows if r["label"] in LABELS}
    errored = {int(r["frame"]) for r in rows if r["label"] == "error"}
    file_error = -1 in errored
    err_frames = {int(e["frame"]) for e in errs if e["frame"].lstrip("-").isdigit()}
    for f in sorted(errored):
        if f not in err_frames:
            problems.append(f"{where}: frame {f} is an error row but errors.csv does not name it")
    for e in errs:
        if "\n" in e.get("error", "") or "Traceback" in e.get("error", ""):
            problems.append(f"{where}: errors.csv message is not one line: {e['error'][:200]!r}")
    if case.frames is not None and not file_error:
        seen = labelled | errored
        missing = set(range(case.frames)) - seen
        if missing:
            problems.append(f"{where}: frames {sorted(missing)} missing from scores.csv (silently dropped)")
    if case.expect == "error":
        if labelled:
            got = [(r["frame"], r["label"], r["p_hit"]) for r in rows if r["label"] in LABELS]
            problems.append(f"{where}: expected error rows, got labels {got}")
        if not errs:
            problems.append(f"{where}: errors.csv does not name the file")
    elif case.expect == "classify":
        if errored:
            msgs = [e["error"][:120] for e in errs]
            problems.append(f"{where}: expected every frame classified, got error rows {sorted(errored)}: {msgs}")
    elif case.expect == "warn":
        if not errs:
            got = [(r["frame"], r["label"], r["p_hit"]) for r in rows]
            problems.append(f"{where}: expected a warning (or error) naming the file in errors.csv, got none; rows {got}")
    for f in case.classify_frames:
        if f not in labelled:
            msgs = [e["error"][:120] for e in errs]
            problems.append(f"{where}: frame {f} must be classified, got {'error' if f in errored else 'nothing'}"
                            f" {msgs}")
    return problems


def _decisions(out, spec) -> dict:
    return {int(r["frame"]): (r["label"], _probs(r)) for r in _scores(out) if r["file"] == spec}


class _Hang(BaseException):
    """Raised by the watchdog in the test process (a BaseException: no except Exception swallows it)."""


class _watchdog:
    """Fail instead of hanging when in-process work does not finish in ``seconds`` (SIGALRM, main thread).

    Cases known to hang run in a subprocess (``hazard``); this guards the rest against a regression that
    makes a reader loop forever (a fabio miniCBF cut inside its MIME header once did: read(512) at EOF).
    """

    def __init__(self, seconds: int, what: str):
        self.seconds, self.what = int(seconds), what

    def _fire(self, signum, frame):
        raise _Hang(f"{self.what}: not finished within {self.seconds} s (a hang in the test process)")

    def __enter__(self):
        self.usable = hasattr(signal, "SIGALRM") and __import__("threading").current_thread() is \
            __import__("threading").main_thread()
        if self.usable:
            self.old = signal.signal(signal.SIGALRM, self._fire)
            signal.alarm(self.seconds)
        return self

    def __exit__(self, *exc):
        if self.usable:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, self.old)
        return False


IN_PROCESS_TIMEOUT_S = 240


def _run_screen(inputs, out, **kw):
    """screen() in this process (under the watchdog); an exception is the run's abort (returned, not raised)."""
    from diffscreen.screen import screen

    try:
        with _watchdog(IN_PROCESS_TIMEOUT_S, "screen"):
            return screen(inputs, out, model=MODEL, resume=False, **kw), None
    except BaseException as exc:  # noqa: BLE001 - reported as the failure
        if isinstance(exc, KeyboardInterrupt):
            raise
        import traceback

        return None, f"the run aborted: {type(exc).__name__}: {exc}\n" + "".join(traceback.format_exc()[-3000:])


# --------------------------------------------------------------------------- file cases


def test_corpus_is_big_enough():
    cases = _all_cases()
    counts = {k: sum(c.category == k for c in cases) for k in corpus.CATEGORIES}
    assert len(cases) >= 80 and all(counts.values()), counts
    for c in cases:
        assert c.description and "\n" not in c.description, c
        assert c.category in corpus.CATEGORIES
    issue = {"cxi_mask_wrong_shape", "cxi_external_missing", "pixel_1e21", "smv_bz2_bomb", "h5_chunked_100000sq",
             "geom_pixel_1e-12", "geom_distance_0", "geom_beam_nan", "nan_outside_crop"}
    assert issue <= {c.name for c in cases if c.category == "file"}
    assert {"bom_crlf", "frame_1e30"} <= {c.name for c in cases if c.category == "labels"}
    assert {"metadata_list", "input_size_40000", "num_classes_negative", "class_names_without_miss", "nan_weights",
            "format_version_99", "pickle_renamed", "torch_pt_payload"} <= {c.name for c in cases
                                                                            if c.category == "model"}


@pytest.mark.parametrize("group", ["hdf5", "fabio", "misc"])
def test_batch_of_bad_files_among_good_ones(group, goods, reference, tmp_path):
    """Every bad file of a group in one run, each between two good frames (good, bad1, good, bad2, ..., good)."""
    cases = [c for c in _cases("file") if c.group == group]
    assert cases
    inputs, good_specs = [goods(0)], [goods(0)]
    for k, c in enumerate(cases, 1):
        g = goods(k, small_frame=k < len(cases))  # the real good frame first and last, small ones between
        inputs += [c.path, g]
        good_specs.append(g)
    out = tmp_path / "out"
    summary, abort = _run_screen(inputs, out)
    assert abort is None, abort
    problems = _check_outputs(out) + _check_good(out, good_specs, reference)
    for c in cases:
        problems += _check_case(c, out)
    assert summary.n_error > 0
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems)


@pytest.mark.parametrize("case", _cases("file", names=SINGLE), ids=_ids(_cases("file", names=SINGLE)))
def test_single_bad_file_between_two_good_ones(case, goods, reference, tmp_path):
    """One bad file between two good frames, one frame per batch (the per-file fast path)."""
    out = tmp_path / "out"
    summary, abort = _run_screen([goods(0), case.path, goods(1)], out, batch_size=1)
    assert abort is None, abort
    problems = _check_outputs(out) + _check_good(out, [goods(0), goods(1)], reference) + _check_case(case, out)
    if case.consistent:  # the same decision alone as among others (one path, one answer)
        alone = tmp_path / "alone"
        _, abort = _run_screen([case.path], alone)
        assert abort is None, abort
        a, b = _decisions(alone, case.path), _decisions(out, case.path)
        for f in sorted(set(a) | set(b)):
            la, pa = a.get(f, ("absent", []))
            lb, pb = b.get(f, ("absent", []))
            same = la == lb and (la == "error" or max((abs(x - y) for x, y in zip(pa, pb)), default=1) <= 1e-3)
            if not same:
                problems.append(f"{case.name} frame {f}: alone {la} {pa}, among others {lb} {pb}")
    assert not problems, "\n".join(problems)


def test_cli_sample_exit_status_and_outputs(goods, reference, tmp_path, capsys):
    """A sample of bad files through the command line: exit 1, no traceback, the good frames screened."""
    from diffscreen.cli import main

    cases = _cases("file", names=CLI_SAMPLE)
    assert len(cases) >= 6
    inputs, good_specs = [goods(0)], [goods(0)]
    for k, c in enumerate(cases, 1):
        inputs += [c.path, goods(k)]
        good_specs.append(goods(k))
    out = tmp_path / "out"
    with _watchdog(IN_PROCESS_TIMEOUT_S, "the CLI sample"):
        code = main(["screen", *inputs, "--out", str(out), "--model", MODEL])
    cap = capsys.readouterr()
    text = cap.out + cap.err
    assert "Traceback" not in text, text[-3000:]
    assert "internal error" not in text, text[-3000:]
    assert code == EXIT_PARTIAL, f"exit {code}, expected 1 (finished, some files failed):\n{text[-3000:]}"
    problems = _check_outputs(out) + _check_good(out, good_specs, reference)
    for c in cases:
        problems += _check_case(c, out)
    assert not problems, "\n".join(problems)


def _limit_memory():  # in the child, before exec
    import resource

    os.setsid()
    resource.setrlimit(resource.RLIMIT_AS, (HAZARD_RLIMIT_AS, HAZARD_RLIMIT_AS))


def _diffscreen_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("diffscreen")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "diffscreen.cli"]


_PEAK = "DIFFSCREEN_TEST_PEAK_RSS_KB="
#: Runs the command and reports its peak RSS (RUSAGE_CHILDREN of this wrapper: that child only).
_WRAPPER = ("import resource, subprocess, sys\n"
            "rc = subprocess.call(sys.argv[1:])\n"
            f"print('{_PEAK}%d' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
            "sys.exit(rc if rc >= 0 else 128 - rc)\n")


def _run_limited(args, timeout=HAZARD_TIMEOUT_S) -> tuple[int | None, str, str, float]:
    """The diffscreen CLI in a subprocess with RLIMIT_AS and a timeout.

    Returns (exit code, or None on timeout, or -signal when killed by one; stdout; stderr; peak RSS in MiB).
    """
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    p = subprocess.Popen([sys.executable, "-c", _WRAPPER, *_diffscreen_cmd(), *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, preexec_fn=_limit_memory, env=env)
    try:
        out, err = p.communicate(timeout=timeout)
        code = p.returncode
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        return None, out, err, float("nan")
    peak = float("nan")
    lines = err.splitlines()
    if lines and lines[-1].startswith(_PEAK):
        peak = int(lines[-1][len(_PEAK):]) / 1024
        err = "\n".join(lines[:-1])
    if code > 128:  # the wrapper's way of saying the child died of a signal
        code = 128 - code
    return code, out, err, peak


def _hazard_run(cases, goods, reference, out, timeout, small=True) -> list[str]:
    """Good, bad1, good, bad2, ..., good through the CLI in a limited subprocess; the problems found.

    ``small``: the small good frame (quick to read: the subprocess is the cost), else the real one.
    """
    inputs, good_specs = [goods(0, small_frame=small)], [goods(0, small_frame=small)]
    for k, c in enumerate(cases, 1):
        inputs += [c.path, goods(k, small_frame=small)]
        good_specs.append(goods(k, small_frame=small))
    code, sout, serr, peak = _run_limited(["screen", *inputs, "--out", str(out), "--model", MODEL], timeout)
    text = sout + serr
    names = ", ".join(c.name for c in cases)
    if code is None:
        return [f"{names}: no exit within {timeout} s (a hang): {text[-1500:]}"]
    if peak > HAZARD_PEAK_RSS_MIB:
        return [f"{names}: peak RSS {peak:.0f} MiB (> {HAZARD_PEAK_RSS_MIB} MiB): what a file says made the process "
                f"allocate; exit {code}: {text[-800:]}"]
    if code < 0:
        return [f"{names}: killed by signal {-code} (a crash in C, or memory): {text[-1500:]}"]
    if "Traceback" in text or "internal error" in text:
        return [f"{names}: a traceback or an internal error: {text[-1500:]}"]
    if code != EXIT_PARTIAL:
        return [f"{names}: exit {code}, expected 1: {text[-1500:]}"]
    problems = _check_outputs(out) + _check_good(out, good_specs, reference)
    for c in cases:
        problems += _check_case(c, out)
        for e in _errors(out):
            if e["file"] == c.path and re.search(r"MemoryError|[Uu]nable to allocate|out of memory", e["error"]):
                problems.append(f"{c.name}: refused only when memory ran out ({e['error'][:200]}); the size "
                                "must be checked before allocating")
    return problems


HAZARDS = ("memory", "hang")


def test_hazardous_files_in_a_limited_subprocess(goods, reference, tmp_path):
    """Bombs, huge stated sizes, a FIFO, a device, each between good frames in one CLI run (RLIMIT_AS 4 GiB,
    a timeout): refused quickly, the good frames screened, exit 1.  When that run fails, every case runs
    alone to name the culprits."""
    cases = _cases("file", hazard=HAZARDS)
    assert cases
    problems = _hazard_run(cases, goods, reference, tmp_path / "all", HAZARD_TIMEOUT_S)
    if not problems:
        return
    per_case = []
    for c in cases:
        per_case += _hazard_run([c], goods, reference, tmp_path / c.name, HAZARD_TIMEOUT_S // 2)
    assert not per_case, f"{len(per_case)} problem(s):\n" + "\n".join(per_case)
    pytest.fail("together they fail, alone each passes:\n" + "\n".join(problems))


def test_crash_prone_files_in_a_subprocess(goods, reference, tmp_path):
    """Damaged x-CBF_PACKED data (CBFlib through pycbf) among good frames, in a child process: no SIGSEGV, exit 1."""
    cases = _cases("file", hazard=("crash",))
    assert cases
    # the real good frame is x-CBF_PACKED too: CBFlib's heap as in a real run (the SIGSEGV came after good reads)
    problems = _hazard_run(cases, goods, reference, tmp_path / "out", HAZARD_TIMEOUT_S, small=False)
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems)


# --------------------------------------------------------------------------- model cases


def _one_error_line(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("ERROR:")]


def _markers_absent(case):
    m = case.extra.get("marker")
    assert m is None or not Path(m).exists(), f"{case.name}: the model file's payload ran (created {m})"


@pytest.mark.parametrize("case", _cases("model"), ids=_ids(_cases("model")))
def test_bad_model_file_is_refused(case, good, tmp_path, capsys):
    """`screen GOOD --model BAD`: exit 3, one ERROR: line naming the model, no traceback, no outputs, no code run."""
    from diffscreen.cli import main

    out = tmp_path / "out"
    with _watchdog(120, case.name):
        code = main(["screen", good, "--model", case.path, "--out", str(out)])
    cap = capsys.readouterr()
    _markers_absent(case)
    assert "Traceback" not in cap.out + cap.err and "internal error" not in cap.err, cap.err[-3000:]
    lines = _one_error_line(cap.err)
    assert len(lines) == 1, f"{case.name}: expected one ERROR: line, got {lines or cap.err[-1000:]}"
    assert code == EXIT_RUN, f"{case.name}: exit {code}, expected 3 (run error): {lines}"
    assert not (out / "scores.csv").exists(), f"{case.name}: the run went ahead with the bad model"


@pytest.mark.parametrize("case", _cases("model"), ids=_ids(_cases("model")))
def test_bad_model_file_fails_to_load(case):
    """load_model raises ModelFileError (nothing else), without running the file's code; a model without a
    'miss' class may load (CDI models have other classes) but the screening method refuses it."""
    from diffscreen.errors import ModelFileError
    from diffscreen.models import load_model

    try:
        with _watchdog(120, case.name):
            bundle = load_model(case.path)
    except ModelFileError:
        _markers_absent(case)
        return
    _markers_absent(case)
    assert case.extra.get("screen_only"), f"{case.name}: load_model accepted it"
    from diffscreen.models.inference import Classifier
    from diffscreen.screen.method import CNNMethod

    with pytest.raises(ModelFileError):
        CNNMethod(Classifier(bundle))


@pytest.mark.parametrize("case", _cases("model", hazard=("memory",)), ids=_ids(_cases("model", hazard=("memory",))))
def test_hazardous_model_in_a_limited_subprocess(case, good, tmp_path):
    """A model record that asks for gigabytes: refused within 4 GiB, exit 3, one ERROR: line."""
    out = tmp_path / "out"
    code, sout, serr, peak = _run_limited(["screen", good, "--model", case.path, "--out", str(out)])
    assert code is not None, f"{case.name}: no exit within {HAZARD_TIMEOUT_S} s"
    assert not peak > HAZARD_PEAK_RSS_MIB, f"{case.name}: peak RSS {peak:.0f} MiB: the record made it allocate"
    assert "Traceback" not in sout + serr, serr[-3000:]
    assert len(_one_error_line(serr)) == 1, serr[-2000:]
    assert code == EXIT_RUN, f"{case.name}: exit {code}, expected 3: {serr[-1000:]}"


# --------------------------------------------------------------------------- label and scores files


@pytest.fixture(scope="module")
def good_scores(folder, good):
    p = folder / "good_scores.csv"
    p.write_text(f"file,frame,p_hit,p_maybe,p_miss,label\n{good},0,0.7,0.2,0.1,hit\n")
    return str(p)


@pytest.fixture(scope="module")
def good_labels(folder, good):
    p = folder / "good_labels.csv"
    p.write_text(f"file,frame,label\n{good},0,hit\n")
    return str(p)


@pytest.mark.parametrize("case", _cases("labels"), ids=_ids(_cases("labels")))
def test_label_file_for_training(case, good):
    """collect_samples (train's reader): a LabelError, or the records the file means."""
    from diffscreen.errors import LabelError
    from diffscreen.train import collect_samples

    try:
        with _watchdog(120, case.name):
            samples, _ = collect_samples([good], [case.path])
    except LabelError as exc:
        assert case.expect in ("refuse", "either"), f"{case.name}: refused but should be read: {exc}"
        assert "\n" not in str(exc)
        return
    assert case.expect in ("read", "either"), f"{case.name}: accepted {samples}, expected a LabelError"
    want = [(r[0], r[1], r[2]) for r in case.extra["records"]]
    got = [(s.source, s.index, LABELS[s.label]) for s in samples]
    assert got == want, f"{case.name}: read {got}, expected {want}"


@pytest.mark.parametrize("case", _cases("labels"), ids=_ids(_cases("labels")))
def test_label_file_for_evaluate(case, good_scores, capsys):
    """`evaluate --scores S --labels L`: exit 2 with one ERROR: line, or exit 0 having read the labels."""
    from diffscreen.cli import main

    with _watchdog(120, case.name):
        code = main(["evaluate", "--scores", good_scores, "--labels", case.path])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.out + cap.err and "internal error" not in cap.err, cap.err[-3000:]
    expect = case.extra.get("evaluate", case.expect)
    if expect == "refuse" or (expect == "either" and code != 0):
        assert code == EXIT_USAGE, f"{case.name}: exit {code}, expected 2 (refused); stdout {cap.out[-500:]!r}"
        assert len(_one_error_line(cap.err)) == 1, cap.err[-1000:]
    else:
        assert code == 0, f"{case.name}: exit {code}: {cap.err[-1000:]}"


@pytest.mark.parametrize("case", _cases("scores"), ids=_ids(_cases("scores")))
def test_malformed_scores_file_for_evaluate(case, good_labels, capsys):
    """`evaluate --scores BAD --labels L`: exit 2 with one ERROR: line (or exit 0 where it can be read)."""
    from diffscreen.cli import main

    with _watchdog(120, case.name):
        code = main(["evaluate", "--scores", case.path, "--labels", good_labels])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.out + cap.err and "internal error" not in cap.err, cap.err[-3000:]
    if case.expect == "either" and code == 0:
        return
    assert code == EXIT_USAGE, f"{case.name}: exit {code}, expected 2: {cap.err[-1000:]}"
    lines = _one_error_line(cap.err)
    assert len(lines) == 1, f"{case.name}: expected one ERROR: line, got {cap.err[-1000:]!r}"
