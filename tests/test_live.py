"""Live screening (issue 14): stream v2 replay = screen, watch screens each file once, the buffer is bounded."""

import csv
import json
import pickle
import socket
import threading
import time

import numpy as np
import pytest

from diffscreen.io.frame import FrameMeta
from diffscreen.io.simplon import StartInfo, StreamFrame, decode, encode_image, encode_start
from diffscreen.live.loop import LiveLoop, StreamItem
from diffscreen.live.watch import cbf_complete
from diffscreen.screen import screen

from toyrun import toy_frame, write_toy_model


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory):
    return write_toy_model(tmp_path_factory.mktemp("model") / "m.safetensors")


@pytest.fixture()
def one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


@pytest.mark.parametrize("compression", ["bslz4", "lz4", "none"])
def test_stream_messages_round_trip(compression):
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 3000, size=(37, 53)).astype(np.uint16)
    raw[5, 7] = 65535  # the detector's invalid value
    mask = np.zeros(raw.shape, bool)
    mask[0] = True
    meta = FrameMeta("run.cxi", 4, "EIGER2 X 4M", 0.075, (20.5, 18.25), 150.0, 0.9793)
    start = StartInfo.from_message(decode(encode_start(series_id=7, shape=raw.shape, meta=meta, mask=mask,
                                                       saturation=4000, source="run.cxi", compression=compression)))
    assert start.shape == (37, 53) and start.name == "run.cxi" and start.saturation == 4000
    assert start.pixel_size_mm == pytest.approx(0.075) and start.distance_mm == pytest.approx(150.0)
    np.testing.assert_array_equal(start.mask, mask)
    other = FrameMeta("run.cxi", 4, None, 0.075, (21.0, 19.0), 151.0, 1.0)
    msg = decode(encode_image(raw, series_id=7, image_id=9, meta=other, source="run.cxi", frame=4,
                              compression=compression))
    f = StreamFrame(msg, start)
    assert (f.name, f.index) == ("run.cxi", 4)
    got, bad, m = f.decode()
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, raw)
    want_bad = mask | (raw >= 4000)
    np.testing.assert_array_equal(bad, want_bad)
    assert bad[5, 7] and bad[0, 10] and not bad[1, 1]
    assert m.beam_centre_px == (21.0, 19.0) and m.distance_mm == pytest.approx(151.0) and m.wavelength_A == 1.0
    # worker processes (--workers) receive the message pickled, as received: still compressed, same frame
    g = pickle.loads(pickle.dumps(f))
    assert (g.name, g.index, g.nbytes) == (f.name, f.index, f.nbytes) and repr(g.msg) == repr(f.msg)
    got2, bad2, m2 = g.decode()
    np.testing.assert_array_equal(got2, raw)
    np.testing.assert_array_equal(bad2, want_bad)
    assert m2 == m


def test_cbf_is_complete_only_when_its_binary_section_is_whole(tmp_path):
    import fabio.cbfimage

    rng = np.random.default_rng(0)
    p = tmp_path / "a.cbf"
    fabio.cbfimage.CbfImage(data=toy_frame("hit", rng, 64)).write(str(p))
    data = p.read_bytes()
    assert cbf_complete(data)
    close = data.rfind(b"--CIF-BINARY-FORMAT-SECTION----")
    for n in (100, len(data) // 2, close, close + 20):
        assert not cbf_complete(data[:n]), n
    assert cbf_complete(data[: close + len(b"--CIF-BINARY-FORMAT-SECTION----")])


def test_replay_through_stream_gives_the_scores_of_screen(tmp_path, one_thread):
    from diffscreen.live.stream import replay, stream
    from diffscreen.simulate import simulate_run

    run = str(simulate_run("rayonix", 24, tmp_path / "run.cxi", seed=4))
    screen([run], tmp_path / "screened", model="fast", batch_size=16)
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    sent = {}
    t = threading.Thread(target=lambda: sent.update(replay(run, endpoint, rate=200, wait_s=20)), daemon=True)
    t.start()
    s = stream(endpoint, tmp_path / "live", until_end=True, idle=30, model="fast", chunk_seconds=0.3)
    t.join(10)
    assert sent["frames"] == 24
    want = _rows(tmp_path / "screened" / "scores.csv")
    got = _rows(tmp_path / "live" / "scores.csv")
    assert got[0] == ["file", "frame", "p_hit", "p_maybe", "p_miss", "n_spots", "n_spots_no_rings", "d_min_A",
                      "ice_rings", "powder_rings", "jet_streak", "label"]
    assert sorted(got[1:], key=lambda r: int(r[1])) == want[1:]  # frame for frame, every cell
    kept = [r for r in want[1:] if r[-1] in ("hit", "maybe")]
    assert 0 < len(kept) < 24
    assert s.frames_received == 24 and s.frames_screened == 24 and s.frames_dropped == 0 and s.frames_failed == 0
    lst = (tmp_path / "live" / "hits.lst").read_text().splitlines()
    assert len(lst) == len(kept) and all(" //" in line and "hits_" in line for line in lst)
    summary = json.loads((tmp_path / "live" / "summary.json").read_text())
    assert summary["frames_received"] == 24 and summary["n_hit"] + summary["n_maybe"] == len(kept)
    # started again on the same OUT, the same replay is not screened twice
    t = threading.Thread(target=lambda: replay(run, endpoint, wait_s=20), daemon=True)
    t.start()
    s2 = stream(endpoint, tmp_path / "live", until_end=True, idle=30, model="fast")
    t.join(10)
    assert s2.frames_already_done == 24 and s2.frames_received == 24
    assert _rows(tmp_path / "live" / "scores.csv") == got


def _write_cbfs(folder, names, slow, rng):
    """Write toy CBFs into ``folder`` one by one; the ``slow`` ones half first, the rest 0.6 s later."""
    import fabio.cbfimage

    staging = folder.parent / "staging"
    staging.mkdir(exist_ok=True)
    for name in names:
        tmp = staging / name
        fabio.cbfimage.CbfImage(data=toy_frame(["hit", "miss", "maybe"][int(rng.integers(3))], rng, 256)).write(str(tmp))
        data = tmp.read_bytes()
        with open(folder / name, "wb") as fh:
            if name in slow:
                fh.write(data[: len(data) // 2])
                fh.flush()
                time.sleep(0.6)
                fh.write(data[len(data) // 2 :])
            else:
                fh.write(data)
        time.sleep(0.1)


def test_watch_screens_each_cbf_once_also_when_written_slowly_and_restarted(tmp_path, toy_model, one_thread):
    from diffscreen.live.watch import watch

    folder = tmp_path / "detector"
    folder.mkdir()
    names = [f"img_{i:03d}.cbf" for i in range(6)]
    slow = {names[1], names[4]}
    rng = np.random.default_rng(11)
    _write_cbfs(folder, names[:2], slow, rng)  # some there before the watch starts
    writer = threading.Thread(target=_write_cbfs, args=(folder, names[2:], slow, rng), daemon=True)
    writer.start()
    out = tmp_path / "live"
    s = watch(folder, out, pattern="*.cbf", idle=2.5, model=toy_model, chunk_seconds=0.3, settle=0.2)
    writer.join(10)
    rows = _rows(out / "scores.csv")
    assert [r[:2] for r in sorted(rows[1:])] == [[str(folder / n), "0"] for n in names]  # each once
    assert s.frames_received == 6 and s.frames_screened == 6 and s.frames_failed == 0
    assert _rows(out / "errors.csv") == [["file", "frame", "error"]]  # no half-written file read as corrupt
    screen([str(folder / n) for n in names], tmp_path / "screened", model=toy_model)
    assert sorted(rows[1:]) == sorted(_rows(tmp_path / "screened" / "scores.csv")[1:])  # the cells of screen
    # started again on the same OUT with one new file: only that one is screened
    _write_cbfs(folder, ["img_new.cbf"], set(), rng)
    s2 = watch(folder, out, pattern="*.cbf", idle=1.0, model=toy_model, chunk_seconds=0.3, settle=0.2)
    rows2 = _rows(out / "scores.csv")
    assert rows2[: len(rows)] == rows and [r[0] for r in rows2[len(rows):]] == [str(folder / "img_new.cbf")]
    assert s2.frames_received == 7 and s2.frames_screened == 7


def test_watch_finds_a_file_made_after_its_first_scan_but_before_its_watcher_started(tmp_path, toy_model,
                                                                                    monkeypatch):
    """A file written whole between the folder's first scan and the moment the watcher runs makes no event; the
    watch must still screen it (a race seen in CI, where a loaded machine widened the gap)."""
    import watchfiles

    from diffscreen.live.watch import watch

    folder = tmp_path / "detector"
    folder.mkdir()
    rng = np.random.default_rng(5)

    def late_watcher(directory, stop_event=None, **kwargs):  # the file lands before the watcher sees anything
        _write_cbfs(folder, ["img_gap.cbf"], set(), rng)
        while not stop_event.is_set():
            time.sleep(0.05)
            yield set()

    monkeypatch.setattr(watchfiles, "watch", late_watcher)
    s = watch(folder, tmp_path / "live", pattern="*.cbf", idle=1.0, model=toy_model, chunk_seconds=0.3, settle=0.2)
    assert s.frames_received == 1 and s.frames_screened == 1
    assert [r[0] for r in _rows(tmp_path / "live" / "scores.csv")[1:]] == [str(folder / "img_gap.cbf")]


@pytest.mark.parametrize("chunk, written, expected", [(1, 3, 2), (1, 10, 9), (2, 5, 4), (4, 5, 4), (4, 3, 0),
                                                       (1, 0, 0), (None, 10, 0)])
def test_written_frames_are_those_before_the_last_row_of_chunks_with_data(tmp_path, chunk, written, expected):
    """A dataset extended to 10 frames ahead of its writer, ``written`` frames written: the frames known whole."""
    import h5py

    from diffscreen.io.hdf5 import written_frames

    with h5py.File(tmp_path / "f.h5", "w") as f:
        kw = {} if chunk is None else {"chunks": (chunk, 16, 16), "maxshape": (None, 16, 16)}
        d = f.create_dataset("data", shape=(10, 16, 16), dtype="i4", **kw)
        for k in range(written):
            d[k] = k + 1
        assert written_frames(d) == expected


_SWMR_WRITER = """
import sys, time
import h5py, numpy as np
sys.path.insert(0, sys.argv[3])
from toyrun import toy_frame
rng = np.random.default_rng(7)
with h5py.File(sys.argv[1], "w", libver="latest") as f:
    d = f.create_dataset("/entry/data/data", shape=(0, 256, 256), maxshape=(None, 256, 256), dtype="i4",
                         chunks=(1, 256, 256))
    f.swmr_mode = True
    for k in range(int(sys.argv[2])):
        d.resize(k + 1, axis=0)
        d[k] = np.rint(toy_frame(["hit", "miss"][k % 2], rng, 256)).astype("i4")
        d.flush()
        time.sleep(0.25)
    time.sleep(float(sys.argv[4]) if len(sys.argv) > 4 else 1.0)
    print(time.time(), flush=True)  # closing now
"""


def test_watch_screens_an_hdf5_file_frame_by_frame_while_its_writer_adds_frames_under_swmr(tmp_path, toy_model,
                                                                                           one_thread):
    """A writer adding a frame every 0.25 s never lets its file settle (1 s): under SWMR its frames are screened
    while it writes, each once, the last one only after it closes, and the rows are those of screen."""
    import subprocess
    import sys
    from pathlib import Path

    from diffscreen.live.watch import watch

    folder = tmp_path / "detector"
    folder.mkdir()
    path = folder / "run_000001.h5"
    here = str(Path(__file__).parent)
    writer = subprocess.Popen([sys.executable, "-c", _SWMR_WRITER, str(path), "8", here], stdout=subprocess.PIPE,
                              text=True)
    news = []
    s = watch(folder, tmp_path / "live", pattern="*.h5", idle=2.5, model=toy_model, chunk_seconds=0.2, settle=1.0,
              status=lambda text: news.append((time.time(), text)))
    closed = float(writer.communicate(timeout=30)[0].split()[-1])
    before = [text for t, text in news if t < closed and "frames received" in text]
    assert before and int(before[-1].split()[0]) >= 6  # all but the last one or two while it was written
    rows = _rows(tmp_path / "live" / "scores.csv")[1:]
    assert sorted(int(r[1]) for r in rows) == list(range(8))  # each frame once
    assert s.frames_screened == 8 and s.frames_failed == 0
    screen([str(path)], tmp_path / "screened", model=toy_model)
    assert sorted(rows) == sorted(_rows(tmp_path / "screened" / "scores.csv")[1:])


def test_screen_of_a_file_still_written_under_swmr_screens_its_whole_frames_and_warns(tmp_path, toy_model,
                                                                                     one_thread):
    """``screen`` on an HDF5 file whose writer still holds it open under SWMR: the frames known whole (all but the
    last written), a warning naming how many, no failed row; before stop 37 the file did not open at all."""
    import subprocess
    import sys
    from pathlib import Path

    import h5py

    path = tmp_path / "run_000001.h5"
    writer = subprocess.Popen([sys.executable, "-c", _SWMR_WRITER, str(path), "5", str(Path(__file__).parent), "8"],
                              stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 30
        while time.time() < deadline:  # until all 5 frames are written (the writer then holds the file 8 s)
            time.sleep(0.2)
            try:
                with h5py.File(path, "r", swmr=True) as f:
                    if f["/entry/data/data"].shape[0] == 5:
                        break
            except (OSError, KeyError):
                pass
        time.sleep(0.3)
        s = screen([str(path)], tmp_path / "out", model=toy_model)
        assert writer.poll() is None  # still open while it was screened
    finally:
        writer.communicate(timeout=30)
    rows = _rows(tmp_path / "out" / "scores.csv")[1:]
    assert [int(r[1]) for r in rows] == [0, 1, 2, 3]  # the last one written is not yet known whole
    errors = _rows(tmp_path / "out" / "errors.csv")[1:]
    assert len(errors) == 1 and errors[0][1] == "-1" and errors[0][2].startswith("warning: ")
    assert "4 of the 5 frames" in errors[0][2]
    assert s.n_frames == 4 and s.n_error == 0 and s.n_warning == 1
    done = screen([str(path)], tmp_path / "closed", model=toy_model)  # once closed: every frame, the same rows
    assert done.n_frames == 5 and _rows(tmp_path / "closed" / "scores.csv")[1:5] == rows


class _Slow:
    """A screening method that takes 0.15 s per batch (a classifier slower than the detector)."""

    def __init__(self, method):
        self.m = method
        self.class_names, self.score_columns = method.class_names, method.score_columns
        self.identity, self.outputs, self.path = method.identity, method.outputs, None

    def classify_source(self, src, indices):
        time.sleep(0.15)
        return self.m.classify_source(src, indices)


class _Frame:
    def __init__(self, i, raw, broken=False):
        self.name, self.index, self.raw, self.broken, self.nbytes = "series_1", i, raw, broken, raw.nbytes

    def decode(self):
        if self.broken:
            raise ValueError("damaged bslz4 data")
        return self.raw, np.zeros(self.raw.shape, bool), FrameMeta("series_1", self.index)


class _Observer:
    def __init__(self):
        self.frames, self.errors, self.dropped_n, self.rates = [], [], 0, []

    def frame(self, frame_id, keep, label, scores, image):
        assert (image is not None) == keep and set(scores) == {"p_hit", "p_maybe", "p_miss"}
        self.frames.append((frame_id, label))

    def error(self, frame_id, message):
        self.errors.append((frame_id, message))

    def dropped(self, n):
        self.dropped_n += n

    def rate(self, fps):
        self.rates.append(fps)


def test_a_slow_classifier_drops_and_counts_frames_beyond_the_buffer(tmp_path, toy_model, one_thread):
    from diffscreen.models.inference import Classifier
    from diffscreen.screen.method import CNNMethod

    rng = np.random.default_rng(2)
    obs = _Observer()
    loop = LiveLoop(tmp_path / "live", method=_Slow(CNNMethod(Classifier(toy_model))), batch_size=2, max_buffer=4,
                    chunk_seconds=0.2, observer=obs)
    loop.start()
    accepted = [loop.offer(StreamItem(_Frame(0, toy_frame("hit", rng), broken=True)))]
    accepted += [loop.offer(StreamItem(_Frame(i, toy_frame("miss", rng)))) for i in range(1, 40)]
    assert loop.buffered <= 4
    s = loop.close()
    assert s.frames_received == 40
    assert s.frames_dropped == accepted.count(False) > 20
    assert s.frames_failed == 1 and s.frames_screened == accepted.count(True) - 1
    assert s.frames_received == s.frames_screened + s.frames_dropped + s.frames_failed
    summary = json.loads((tmp_path / "live" / "summary.json").read_text())
    assert (summary["frames_received"], summary["frames_dropped"], summary["frames_failed"]) == (40, s.frames_dropped, 1)
    rows = _rows(tmp_path / "live" / "scores.csv")
    assert len(rows) - 1 == s.frames_screened + s.frames_failed
    assert ["series_1", "0", *[""] * 9, "error"] in rows  # blank probabilities and per-frame numbers
    assert obs.dropped_n == s.frames_dropped and len(obs.frames) == s.frames_screened and len(obs.errors) == 1
    assert obs.rates and all(r > 0 for r in obs.rates)


def _loop_rows(out, items, workers, model, batch_size=3):
    loop = LiveLoop(out, model=model, batch_size=batch_size, workers=workers, chunk_seconds=0.2)
    loop.start()
    for it in items:
        loop.offer(it, block=True)
    s = loop.close()
    lst = (out / "hits.lst").read_text().splitlines()  # a stream's kept frame: the chunk's hits file, timing's choice
    return s, _rows(out / "scores.csv"), _rows(out / "errors.csv"), [e if "hits_" not in e else "hits" for e in lst]


def test_two_worker_processes_write_the_rows_of_one_in_arrival_order(tmp_path, toy_model, one_thread):
    """Worker processes: the same scores.csv, errors.csv and hits.lst as the loop's own thread, row for row,
    with file frames, an unreadable file, a source's error item and stream frames (one that cannot be decoded)."""
    from diffscreen.live.loop import ErrorItem, FileItem
    from toyrun import write_toy_run

    labels = ["hit", "miss", "maybe", "miss", "hit", "miss", "miss"]
    run = str(write_toy_run(tmp_path / "run.cxi", labels, seed=3))
    (tmp_path / "broken.cbf").write_bytes(b"###CBF: not really")
    rng = np.random.default_rng(5)
    raws = [toy_frame(lab, rng) for lab in ("hit", "miss", "maybe", "hit")]

    def items():
        out = [FileItem(run, i) for i in range(4)]
        out += [FileItem(str(tmp_path / "broken.cbf"), 0), ErrorItem("stream:x", -1, "message not understood: junk")]
        out += [StreamItem(_Frame(i, raw, broken=(i == 1))) for i, raw in enumerate(raws)]
        return out + [FileItem(run, i) for i in range(4, 7)]

    s1, *one = _loop_rows(tmp_path / "w1", items(), 1, toy_model)
    s2, *two = _loop_rows(tmp_path / "w2", items(), 2, toy_model)
    assert two == one
    scores = one[0]
    assert [r[:2] for r in scores[1:]] == [[it.name, str(it.index)] for it in items()]  # arrival order
    assert [r[-1] for r in scores[1:]].count("error") == 3  # broken file, error item, damaged message
    assert s1.frames_failed == s2.frames_failed == 3 and s2.frames_screened == s1.frames_screened == 10
    assert 0 < len(one[2]) < 10  # some kept


class _Unpicklable(_Frame):
    def __init__(self, i, raw):
        super().__init__(i, raw)
        self.name = "series_2"
        self.hook = lambda: None  # a local function: cannot be sent to a worker process


def test_a_batch_a_worker_cannot_take_is_error_rows_and_the_rest_is_screened(tmp_path, toy_model, one_thread):
    """With worker processes, a stream message that cannot be sent to them becomes an error row per frame (the
    loop goes on), and the frames around it are screened."""
    rng = np.random.default_rng(9)
    loop = LiveLoop(tmp_path / "out", model=toy_model, batch_size=4, workers=2, chunk_seconds=0.2)
    loop.start()
    items = [StreamItem(_Frame(0, toy_frame("hit", rng))), StreamItem(_Unpicklable(1, toy_frame("miss", rng))),
             StreamItem(_Frame(2, toy_frame("miss", rng)))]
    for it in items:
        loop.offer(it, block=True)
    s = loop.close()
    rows = _rows(tmp_path / "out" / "scores.csv")[1:]
    assert [(r[0], r[1], r[-1] == "error") for r in rows] == [("series_1", "0", False), ("series_2", "1", True),
                                                             ("series_1", "2", False)]
    errors = _rows(tmp_path / "out" / "errors.csv")[1:]
    assert len(errors) == 1 and errors[0][:2] == ["series_2", "1"] and "pickle" in errors[0][2].lower()
    assert s.frames_screened == 2 and s.frames_failed == 1
