"""Label files: the CXIDB-76 annotations, CSV, CXI; lookup and validation."""

import numpy as np
import pytest

from diffscreen.errors import LabelError
from diffscreen.io import open_source
from diffscreen.io.cxi import CXIWriter
from diffscreen.io.frame import FrameMeta
from diffscreen.io.labels import (
    LabelRecord,
    LabelTable,
    label_format,
    read_dials_annotation,
    read_expert_annotation,
    read_label_csv,
    read_labels,
    write_label_csv,
)

# Ke et al. (2018) Table 1 / ANCHORS.md: hit, maybe, miss per run, and the data file each run names
EXPERT_COUNTS = {
    "L498": ("r0027_2000.h5", 148, 498, 1354),
    "LG36": ("r0087_2000.h5", 235, 57, 1708),
    "LN83": ("r0018_2000.h5", 346, 63, 1591),
    "LN84": ("r0095_2000.h5", 806, 132, 1062),
    "LO19": ("r0020_2000.h5", 730, 151, 1119),
}
DIALS_LINES = {"L498": 1936, "LG36": 2000, "LN83": 1691, "LN84": 1802, "LO19": 1970}
DIALS_THRESHOLDS = {"L498": 30, "LG36": 20, "LN83": 15, "LN84": 30, "LO19": 50}  # annotation_notes


@pytest.fixture(scope="module")
def annotations(shared_data):
    folder = shared_data / "cxidb76-annotations"
    if not folder.is_dir():
        pytest.skip("no cxidb76-annotations folder")
    return folder


@pytest.mark.parametrize("run", sorted(EXPERT_COUNTS))
def test_expert_annotation_counts(annotations, run):
    name, hit, maybe, miss = EXPERT_COUNTS[run]
    path = annotations / run / "expert_annotation.txt"
    recs = read_expert_annotation(path)
    assert LabelTable.from_records(recs).counts() == {"hit": hit, "maybe": maybe, "miss": miss}
    assert [r.frame for r in recs] == list(range(2000))  # "[1]" .. "[2000]" -> 0 .. 1999
    assert {r.file for r in recs} == {name}
    assert read_labels(path) == recs and label_format(path) == "expert"


def test_expert_index_is_one_based(annotations):
    recs = read_expert_annotation(annotations / "LN84" / "expert_annotation.txt")
    assert recs[2] == LabelRecord("r0095_2000.h5", 2, "hit")  # line 3: "r0095_2000.h5 [3] HIT"
    assert recs[2].line == 3 and recs[2].source.endswith("expert_annotation.txt")


@pytest.mark.parametrize("run", sorted(DIALS_LINES))
def test_dials_annotation(annotations, run):
    path = annotations / run / "dials_annotation.txt"
    recs = read_dials_annotation(path)
    assert len(recs) == DIALS_LINES[run]
    assert {r.file for r in recs} == {EXPERT_COUNTS[run][0]}  # taken from expert_annotation.txt beside it
    assert all(r.n_spots >= 1 and r.label in ("hit", "miss") for r in recs)
    # the file's Hit/Miss is the spot count against the run's threshold (annotation_notes)
    assert recs == read_dials_annotation(path, threshold=DIALS_THRESHOLDS[run])
    assert read_labels(path) == recs
    full = read_dials_annotation(path, n_frames=2000)
    assert [r.frame for r in full] == list(range(2000))
    assert sum(r.n_spots == 0 and r.label == "miss" for r in full) == 2000 - DIALS_LINES[run]


def test_dials_indices_are_one_based(annotations):
    recs = read_dials_annotation(annotations / "LN84" / "dials_annotation.txt")
    assert (recs[0].frame, recs[0].n_spots, recs[0].label) == (1, 1, "miss")  # "00002     1 Miss"
    assert (recs[1].frame, recs[1].n_spots, recs[1].label) == (2, 305, "hit")  # "00003   305 Hit"
    relabelled = read_dials_annotation(annotations / "LN84" / "dials_annotation.txt", threshold=400, file="x.h5")
    assert relabelled[1] == LabelRecord("x.h5", 2, "miss", 305)


def test_dials_without_a_data_file_name(tmp_path):
    p = tmp_path / "dials_annotation.txt"
    p.write_text("00001    22 Miss\n")
    with pytest.raises(LabelError, match="file="):
        read_dials_annotation(p)
    assert read_dials_annotation(p, file="run.h5") == [LabelRecord("run.h5", 0, "miss", 22)]


def test_csv_round_trip(tmp_path):
    recs = [LabelRecord("/data/a.cbf", 0, "hit", 17), LabelRecord("b.h5:/entry/data", 5, "maybe"),
            LabelRecord("c, with comma.mccd", 2, "miss", 0)]
    path = write_label_csv(recs, tmp_path / "labels.csv")
    back = read_label_csv(path)
    assert back == recs and [r.line for r in back] == [2, 3, 4]
    assert read_labels(path) == recs and label_format(path) == "csv"


def test_csv_labels_are_case_insensitive(tmp_path):
    p = tmp_path / "l.csv"
    p.write_text("label,file,frame\nHIT,x.cbf,0\n# a comment\nMiss,x.cbf,1\n")
    assert [(r.frame, r.label) for r in read_label_csv(p)] == [(0, "hit"), (1, "miss")]


@pytest.mark.parametrize(
    "name, text, line, words",
    [
        ("expert.txt", "r1.h5 [1] HIT\nr1.h5 [2] MISS\nr1.h5 3 MISS\n", 3, "expected"),
        ("expert.txt", "r1.h5 [1] HIT\nr1.h5 [0] MISS\n", 2, "1-based"),
        ("expert.txt", "r1.h5 [1] HIT\nr1.h5 [2] WEAK\n", 2, "unknown class 'WEAK'"),
        ("expert.txt", "r1.h5 [1] HIT\nr1.h5 [1] MISS\n", 2, "labelled again"),
        ("labels.csv", "file,frame,label\na.cbf,0,hit\na.cbf,x,hit\n", 3, "not an integer"),
        ("labels.csv", "file,frame,label\na.cbf,0,hit\n\na.cbf,1,strong\n", 4, "unknown class"),
        ("labels.csv", "file,frame,label\na.cbf,-1,hit\n", 2, "negative"),
        ("labels.csv", "file,frame\na.cbf,0\n", 1, "lacks column"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, name, text, line, words):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(LabelError) as ei:
        read_labels(p)
    msg = str(ei.value)
    assert str(p) in msg and f"line {line}:" in msg and words in msg


def test_malformed_dials_line(tmp_path):
    p = tmp_path / "dials_annotation.txt"
    p.write_text("00001    22 Miss\n00002 x Hit\n")
    with pytest.raises(LabelError, match="line 2:"):
        read_dials_annotation(p, file="r.h5")
    p.write_text("00001    22 Maybe\n")
    with pytest.raises(LabelError, match="line 1: unknown verdict"):
        read_dials_annotation(p, file="r.h5")


def test_unrecognised_label_file(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello world\n")
    with pytest.raises(LabelError, match="line 1: not a label file"):
        read_labels(p)
    with pytest.raises(LabelError, match="no such label file"):
        read_labels(tmp_path / "absent.csv")


def _labelled_cxi(path):
    rng = np.random.default_rng(0)
    with CXIWriter(path) as w:
        for i, lab in enumerate(["hit", "miss", "maybe"]):
            w.append(rng.integers(0, 9, (8, 8)), FrameMeta(str(path), i), label=lab, n_spots=[20, 0, 5][i])
        w.append(rng.integers(0, 9, (4, 4)), FrameMeta(str(path), 3), label="miss")  # a second entry
    return path


def test_labels_from_cxi_and_from_frame_files(tmp_path, real_frame):
    path = _labelled_cxi(tmp_path / "run.cxi")
    recs = read_labels(path)
    assert [(r.file, r.frame, r.label, r.n_spots) for r in recs] == [
        (str(path), 0, "hit", 20), (str(path), 1, "miss", 0), (str(path), 2, "maybe", 5), (str(path), 3, "miss", None)]
    with open_source(path) as src:
        assert [src.read(r.frame).meta.extra["label"] for r in recs] == [r.label for r in recs]
    cbf = real_frame("real-frames", "hit-20181213155134902.cbf")
    assert read_labels(cbf) == [] and label_format(cbf) == "frames"


def test_table_matches_full_path_or_base_name(tmp_path):
    t = LabelTable.from_records([LabelRecord("r0095_2000.h5", 2, "hit"),
                                 LabelRecord(str(tmp_path / "a" / "run.cxi"), 0, "maybe")])
    assert t.get("/anywhere/LN84/r0095_2000.h5", 2) == "hit"
    assert t.get("r0095_2000.h5", 2) == "hit" and t.get("r0095_2000.h5", 3) is None
    assert t.get(tmp_path / "a" / "run.cxi", 0) == "maybe"
    assert t.get("other.h5", 2) is None
    assert len(t) == 2 and t.counts() == {"hit": 1, "maybe": 1, "miss": 0}
    t.add(LabelRecord(str(tmp_path / "b" / "run.cxi"), 0, "miss"))
    assert t.get(tmp_path / "b" / "run.cxi", 0) == "miss"  # full paths still tell them apart
    with pytest.raises(LabelError, match="several files named run.cxi"):
        t.get("/elsewhere/run.cxi", 0)


def test_conflicting_labels(tmp_path):
    a = LabelRecord("x.cbf", 0, "hit", source="a.csv", line=2)
    b = LabelRecord("x.cbf", 0, "miss", source="b.csv", line=9)
    with pytest.raises(LabelError) as ei:
        LabelTable.from_records([a, b])
    assert "a.csv line 2" in str(ei.value) and "b.csv line 9" in str(ei.value)
    assert len(LabelTable.from_records([a, a])) == 1


def test_validate_catches_a_label_for_a_missing_frame(tmp_path):
    run = _labelled_cxi(tmp_path / "run.cxi")
    csv = tmp_path / "labels.csv"
    csv.write_text("file,frame,label\nrun.cxi,0,hit\nrun.cxi,3,miss\nrun.cxi,4,hit\nother.cbf,9,hit\n")
    table = LabelTable.from_records(read_labels(csv))
    with open_source(run) as src:
        n = len(src)
    assert n == 4
    with pytest.raises(LabelError) as ei:
        table.validate({str(run): n})
    msg = str(ei.value)
    assert str(csv) in msg and "line 4" in msg and str(run) in msg and "frame 4" in msg and ei.value.frame == 4
    table.validate({str(run): 5})  # a 5-frame run has frame 4; other.cbf is not among the sources
