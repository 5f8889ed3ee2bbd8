"""Screening: outputs agree with the classifier, hits are kept, errors reported, runs resume."""

import csv
import json

import h5py
import numpy as np
import pytest

from diffscreen.io import open_source
from diffscreen.models.decision import decide
from diffscreen.models.inference import Classifier
from diffscreen.screen import screen

from toyrun import write_toy_model, write_toy_run

LABELS = ["hit", "miss", "maybe", "miss", "hit", "miss", "miss", "hit", "miss", "maybe", "miss", "miss"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A random-weight model whose outputs vary between frames (bias pushed to split decisions)."""
    return write_toy_model(tmp_path_factory.mktemp("model") / "m.safetensors")


@pytest.fixture()
def run(tmp_path):
    return str(write_toy_run(tmp_path / "run.cxi", LABELS, seed=5))


def read_scores(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_screen_outputs_agree_with_classifier(run, model_file, tmp_path):
    out = tmp_path / "out"
    summary = screen([run], out, model=model_file, batch_size=5, chunk_size=4)
    rows = read_scores(out / "scores.csv")
    assert list(rows[0]) == ["file", "frame", "p_hit", "p_maybe", "p_miss", "n_spots", "n_spots_no_rings",
                             "d_min_A", "ice_rings", "powder_rings", "jet_streak", "label"]
    assert [int(r["frame"]) for r in rows] == list(range(len(LABELS)))
    clf = Classifier(model_file)
    with open_source(run) as src:
        frames = [src.read(i) for i in range(len(src))]
    probs = clf.predict(frames)
    keep, labels = decide(probs)
    got = np.array([[float(r[c]) for c in ("p_hit", "p_maybe", "p_miss")] for r in rows])
    np.testing.assert_allclose(got, probs, atol=1e-5)
    assert [r["label"] for r in rows] == labels
    kept = [i for i, k in enumerate(keep) if k]
    assert 0 < len(kept) < len(LABELS), "fixture model should split the frames"
    assert (out / "hits.lst").read_text().splitlines() == [f"{run} //{i}" for i in kept]
    with h5py.File(out / "hits.cxi", "r") as f:
        data = f["entry_1/data_1/data"]
        assert data.shape[0] == len(kept)
        for j, i in enumerate(kept):
            np.testing.assert_array_equal(data[j], frames[i].data)
        np.testing.assert_allclose(f["entry_1/result_1/probabilities"][:], probs[kept], atol=1e-6)
        assert f["entry_1/result_1/source_frame"][:].tolist() == kept
    with open_source(str(out / "hits.cxi")) as hits:  # our own reader takes it back, masks included
        assert len(hits) == len(kept)
        back = hits.read(len(kept) - 1)
        np.testing.assert_array_equal(back.data, frames[kept[-1]].data)
        np.testing.assert_array_equal(back.mask, frames[kept[-1]].mask)
    assert summary.n_frames == len(LABELS) and summary.n_kept == len(kept) and summary.n_error == 0
    assert summary.hit_rate == pytest.approx(len(kept) / len(LABELS))
    s = json.loads((out / "summary.json").read_text())
    assert s["n_frames"] == len(LABELS)
    assert not (out / ".partial").exists()


def test_a_kept_frame_is_read_whole_once(run, model_file, tmp_path, monkeypatch):
    """The whole frame read for a kept frame's per-frame numbers is the one written to hits.cxi: one read, not two
    (a compressed frame is decoded once); a dropped frame is never read whole."""
    with open_source(run) as src:
        cls = type(src)
    reads = []
    original = cls.read

    def counting(self, i):
        reads.append(i)
        return original(self, i)

    monkeypatch.setattr(cls, "read", counting)
    out = tmp_path / "out"
    screen([run], out, model=model_file, batch_size=5, chunk_size=4)
    kept = [int(r["frame"]) for r in read_scores(out / "scores.csv") if r["label"] != "miss"]
    assert kept and sorted(reads) == kept
    with h5py.File(out / "hits.cxi", "r") as f, open_source(run) as src:
        for j, i in enumerate(kept):
            np.testing.assert_array_equal(f["entry_1/data_1/data"][j], src.read(i).data)


def test_bad_files_and_frames_are_reported_and_the_rest_screened(run, model_file, tmp_path):
    bad = tmp_path / "corrupt.cxi"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with h5py.File(tmp_path / "nan.h5", "w") as f:
        d = np.ones((4, 256, 256), np.float32)
        d[1, 5, 5] = np.nan
        d[2] = 0  # an empty readout
        d[3, 9, 9] = np.inf
        f["data"] = d
    out = tmp_path / "out"
    summary = screen([str(bad), run, str(tmp_path / "nan.h5") + ":/data"], out, model=model_file)
    rows = read_scores(out / "scores.csv")
    errs = [r for r in rows if r["label"] == "error"]
    h5 = str(tmp_path / "nan.h5") + ":/data"
    assert {(r["file"], r["frame"]) for r in errs} == {(str(bad), "-1"), (h5, "1"), (h5, "2"), (h5, "3")}
    assert sum(r["label"] != "error" for r in rows) == len(LABELS) + 1
    assert summary.n_error == 4
    errors = {(r["file"], r["frame"]): r["error"] for r in csv.DictReader(open(out / "errors.csv"))}
    assert "NaN or infinite" in errors[(h5, "1")] and "NaN or infinite" in errors[(h5, "3")]
    assert "all pixels are zero" in errors[(h5, "2")]
    assert "cannot open as HDF5" in errors[(str(bad), "-1")]


def test_interrupted_screen_resumes(run, model_file, tmp_path, monkeypatch):
    out = tmp_path / "out"
    import diffscreen.screen.runner as runner

    calls = {"n": 0}
    original = runner._Chunk.run

    def crash_second(self, items, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, items, *a, **k)

    monkeypatch.setattr(runner._Chunk, "run", crash_second)
    with pytest.raises(KeyboardInterrupt):
        screen([run], out, model=model_file, chunk_size=4)
    assert not (out / "scores.csv").exists() and not (out / "hits.cxi").exists()  # nothing half-written
    assert len(list((out / ".partial").glob("chunk_*.csv"))) == 1
    monkeypatch.setattr(runner._Chunk, "run", original)
    summary = screen([run], out, model=model_file, chunk_size=4)
    assert summary.resumed_chunks == 1
    fresh = screen([run], tmp_path / "fresh", model=model_file, chunk_size=4)
    assert (out / "scores.csv").read_text() == (tmp_path / "fresh" / "scores.csv").read_text()
    assert fresh.resumed_chunks == 0


def test_fast_source_path_gives_the_reference_outputs(run, model_file, tmp_path):
    """screen() reads only the crop window of CXI frames (fast path); the outputs equal the reference path's."""
    with h5py.File(run, "r+") as f:  # frame 3: an empty readout (both paths must refuse it)
        f["entry_1/data_1/data"][3] = 0
    fast, ref = tmp_path / "fast", tmp_path / "ref"
    screen([run], fast, model=model_file, batch_size=4)
    screen([run], ref, model=Classifier(model_file, fast=False), batch_size=4)
    rf, rr = read_scores(fast / "scores.csv"), read_scores(ref / "scores.csv")
    assert [r["label"] for r in rf] == [r["label"] for r in rr]
    assert rf[3]["label"] == "error"
    cols = ("p_hit", "p_maybe", "p_miss")
    ok = [i for i, r in enumerate(rr) if r["label"] != "error"]
    np.testing.assert_allclose([[float(rf[i][c]) for c in cols] for i in ok],
                               [[float(rr[i][c]) for c in cols] for i in ok], atol=1e-4)  # fmt: skip
    assert (fast / "hits.lst").read_text() == (ref / "hits.lst").read_text()
    with h5py.File(fast / "hits.cxi", "r") as a, h5py.File(ref / "hits.cxi", "r") as b:
        np.testing.assert_array_equal(a["entry_1/data_1/data"][:], b["entry_1/data_1/data"][:])
