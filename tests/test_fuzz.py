"""Issue 18, "Fuzzing": a short property run over the readers and the model loader (hypothesis).

The same targets as ``bench/fuzz.py`` (its 30-minute coverage-guided run
writes docs/reliability.md), here for a few hundred inputs:

* the readers: :func:`diffscreen.io.open_source`, ``len``, ``shape`` and every
  frame read, on byte-mutated small valid files of every format (miniCBF,
  x-CBF_PACKED, SMV, EDF, TIFF, CXI, HDF5 dataset, gzip/bzip2 wrappers, with
  mutations inside the compressed stream too);
* the model loader: :func:`diffscreen.models.load_model` and the screening
  method on mutated metadata records, tensors and bytes of the bundled model;
* the classifier: frames with extreme finite values, NaN and inf give finite
  probabilities or a :class:`~diffscreen.errors.DiffscreenError`.

Only a DiffscreenError with a one-line message may come out.  Readers and
loader run in a worker process with ``RLIMIT_AS`` (3 GiB) and a 10-s timeout
per input, so a crash in C, a hang or a decompression bomb fails the test
instead of taking the machine down; a failing input is saved and named in the
message.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import corpus  # noqa: E402


def _load_fuzz():
    spec = importlib.util.spec_from_file_location("diffscreen_bench_fuzz", ROOT / "bench" / "fuzz.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


fuzz = _load_fuzz()

TIMEOUT_S = 10.0
RLIMIT = 3 << 30
FUZZ = settings(deadline=None, database=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck), print_blob=True)

# --------------------------------------------------------------------------- strategies

_pos = st.floats(0, 1, exclude_max=True, allow_nan=False)
BYTE_OP = st.one_of(
    st.tuples(st.just("bit"), _pos, st.integers(0, 7)),
    st.tuples(st.just("byte"), _pos, st.sampled_from((0, 0xFF, 0x7F, 0x80)) | st.integers(0, 255)),
    st.tuples(st.just("hbyte"), st.integers(0, 4095), st.integers(0, 255)),
    st.tuples(st.just("int"), _pos, st.sampled_from((1, 2, 4, 8)), st.integers(0, len(fuzz.INTERESTING_INTS) - 1),
              st.booleans()),
    st.tuples(st.just("del"), _pos, st.sampled_from((1, 2, 4, 16, 256, 4096))),
    st.tuples(st.just("dup"), _pos, st.sampled_from((1, 4, 64, 1024))),
    st.tuples(st.just("ins"), _pos, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("trunc"), _pos),
    st.tuples(st.just("num"), st.integers(0, 63), st.integers(0, len(fuzz.INTERESTING_TEXT) - 1)),
)
BYTE_OPS = st.lists(BYTE_OP, min_size=1, max_size=5)
MODEL_OP = st.one_of(
    st.tuples(st.just("json"), st.integers(0, 200), st.integers(-2, len(fuzz.INTERESTING_JSON) - 1)),
    st.tuples(st.just("jdel"), st.integers(0, 200)),
    st.tuples(st.just("tensor"), st.integers(0, 63), st.integers(0, len(fuzz.TENSOR_OPS) - 1)),
)
MODEL_OPS = st.lists(MODEL_OP, min_size=1, max_size=3)


# --------------------------------------------------------------------------- fixtures


class _Quiet(dict):
    """A fixture value hypothesis prints briefly (it prints every argument of a failing example)."""

    def __repr__(self) -> str:
        return f"<{len(self)} items>"


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """name -> (spec, bytes) of the small valid files."""
    out = _Quiet()
    for name, spec in corpus.write_seeds(tmp_path_factory.mktemp("seeds")).items():
        out[name] = (spec, Path(spec.split(":/", 1)[0] if name.endswith(":/data") else spec).read_bytes())
    return out


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _worker(target, work):
    w = fuzz.Worker(target, rlimit_bytes=RLIMIT, log_dir=work / "logs")
    w.start()
    yield w
    w.close()


@pytest.fixture(scope="module")
def reader_worker(work):
    yield from _worker("reader", work)


@pytest.fixture(scope="module")
def model_worker(work):
    yield from _worker("model", work)


def _verdict(res: dict, saved: Path) -> str:
    return (f"{res['status']}: {res.get('exc')} at {res.get('where')}: {res.get('msg', '')[:300]}\n"
            f"input saved as {saved}\n{res.get('tb', '')[-2500:]}")


def _check(res: dict, data: bytes, work: Path, suffix: str):
    """Only 'ok' (read) or 'error' (a one-line DiffscreenError) pass; the failing input is kept."""
    if res["status"] in ("ok", "error"):
        return
    failures = work / "failures"
    failures.mkdir(exist_ok=True)
    import hashlib

    saved = failures / f"{res['status']}-{hashlib.sha256(data).hexdigest()[:12]}{suffix}"
    saved.write_bytes(data)
    pytest.fail(_verdict(res, saved), pytrace=False)


# --------------------------------------------------------------------------- readers


def test_every_seed_reads_cleanly(seeds, reader_worker):
    for name, (spec, _) in seeds.items():
        res = reader_worker.run(spec, TIMEOUT_S)
        assert res["status"] == "ok", f"seed {name}: {res}"


@settings(FUZZ, max_examples=300)
@given(seed=st.data())
def test_readers_only_raise_diffscreen_errors(seed, seeds, reader_worker, work):
    """Byte-mutated files of every format: read, or a one-line DiffscreenError; no crash, hang or blow-up."""
    name = seed.draw(st.sampled_from(sorted(seeds)), label="seed")
    ops = seed.draw(BYTE_OPS, label="ops")
    inner = fuzz.compression_of(name) is not None and seed.draw(st.booleans(), label="inside the compression")
    other = seeds[seed.draw(st.sampled_from(sorted(seeds)), label="splice with")][1]
    spec0, data0 = seeds[name]
    data = fuzz.mutate_file(data0, ops, name=name, inner=inner, other=other)
    suffix = fuzz._file_suffix(name)
    path = work / f"reader-input{suffix}"
    path.write_bytes(data)
    res = reader_worker.run(fuzz._spec_for(path, name), TIMEOUT_S)
    _check(res, data, work, suffix)


# --------------------------------------------------------------------------- model loader


@pytest.fixture(scope="module")
def model_seed(work):
    p = corpus.model_seed(work / "model")
    tensors, record = fuzz.read_model_file(p)
    return _Quiet(raw=Path(p).read_bytes(), tensors=tensors, record=record)


def test_model_seed_loads(model_seed, model_worker, work):
    p = work / "model-seed.safetensors"
    p.write_bytes(model_seed["raw"])
    res = model_worker.run(str(p), 60)
    assert res["status"] == "ok", res


@settings(FUZZ, max_examples=120)
@given(data=st.data())
def test_model_loader_only_raises_model_file_errors(data, model_seed, model_worker, work):
    """Mutated records, tensors and bytes of a model file: loaded (and valid), or a one-line ModelFileError."""
    raw, tensors, record = model_seed["raw"], model_seed["tensors"], model_seed["record"]
    if data.draw(st.integers(0, 3), label="byte mutation if 0") == 0:
        ops = data.draw(BYTE_OPS, label="byte ops")
        n = int.from_bytes(raw[:8], "little")
        ops = [(o[0], o[1] * (n + 8) / len(raw), *o[2:]) if o[0] in ("bit", "byte", "int", "del", "dup", "ins")
               else o for o in ops]  # inside the JSON header, where the parsing is
        blob = fuzz.apply_ops(raw, ops)
    else:
        ops = data.draw(MODEL_OPS, label="model ops")
        t, md = fuzz.mutate_model(tensors, record, ops)
        try:
            blob = fuzz.write_model_bytes(t, md)
        except Exception:  # noqa: BLE001 - safetensors cannot even write it
            return
    path = work / "model-input.safetensors"
    path.write_bytes(blob)
    res = model_worker.run(str(path), TIMEOUT_S)
    _check(res, blob, work, ".safetensors")


# --------------------------------------------------------------------------- classifier


@pytest.fixture(scope="module")
def classifier():
    from diffscreen.models.inference import Classifier

    return Classifier("fast")


_SPECIAL = st.sampled_from((0.0, -1.0, 1e-30, 1e20, 1e21, 3.4e38, -3.4e38, 65535.0, 2.0 ** 31, float("nan"),
                            float("inf"), -float("inf")))


@settings(FUZZ, max_examples=40)
@given(data=st.data())
def test_classifier_gives_finite_probabilities_or_an_error(data, classifier):
    """A frame with extreme values somewhere: finite probabilities summing to 1, or a DiffscreenError."""
    from diffscreen.errors import DiffscreenError
    from diffscreen.io.frame import Frame, FrameMeta, check_frame

    h = data.draw(st.sampled_from((64, 200, 512)), label="height")
    w = data.draw(st.sampled_from((64, 300, 512)), label="width")
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16), label="rng"))
    img = rng.poisson(data.draw(st.sampled_from((0.5, 20.0, 1000.0)), label="background"), (h, w)).astype(np.float32)
    for _ in range(data.draw(st.integers(0, 4), label="special pixels")):
        y, x = data.draw(st.integers(0, h - 1)), data.draw(st.integers(0, w - 1))
        size = data.draw(st.sampled_from((1, 1, 3, 20)))
        img[y : y + size, x : x + size] = data.draw(_SPECIAL)
    mask = np.zeros((h, w), bool)
    if data.draw(st.booleans(), label="mask a block"):
        mask[: h // 2] = True
    meta = FrameMeta(source="fuzz", index=0)
    if data.draw(st.booleans(), label="geometry"):
        meta.pixel_size_mm = data.draw(st.sampled_from((0.075, 0.172, 1e-9, 1e6)))
        meta.distance_mm = data.draw(st.sampled_from((100.0, 0.0, 1e9, -5.0)))
        meta.wavelength_A = data.draw(st.sampled_from((1.0, 0.0, 1e-6)))
        meta.beam_centre_px = data.draw(st.sampled_from(((w / 2, h / 2), (float("nan"), 0.0), (1e12, -1e12))))
    frame = Frame(img, mask, meta)
    try:
        check_frame(frame)
        probs = classifier.predict([frame])
    except DiffscreenError as exc:
        assert "\n" not in str(exc)
        return
    assert probs.shape == (1, len(classifier.class_names))
    assert np.isfinite(probs).all() and abs(float(probs.sum()) - 1) < 1e-3, (
        f"probabilities {probs} for a {h}x{w} frame with values in [{np.nanmin(img)}, {np.nanmax(img)}]")
