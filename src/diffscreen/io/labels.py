"""Frame labels (hit / maybe / miss): reading, writing and looking them up.

Formats read (:func:`read_labels` tells them apart by content):

expert annotation (CXIDB-76, Ke et al. 2018; fv5080 ``annotation/<RUN>/expert_annotation.txt``)
    ``r0095_2000.h5 [3] HIT``: data file, 1-based frame index, HIT | MAYBE | MISS.
DIALS annotation (same folders, ``dials_annotation.txt``)
    ``00003   305 Hit``: 1-based frame (``%05d``), spot count, Hit | Miss.
    Frames in which dials.find_spots found no spot are left out; the file
    does not name its data file (see :func:`read_dials_annotation`).
CSV
    Header ``file,frame,label`` (optional ``n_spots``); frame 0-based,
    label case-insensitive.
CXI
    ``/entry_k/result_1/label`` (index into attribute ``class_names``, −1 =
    none) and ``n_spots``, as :class:`~diffscreen.io.cxi.CXIWriter` writes
    them; frames numbered as :class:`~diffscreen.io.hdf5.CXISource` does.

All frame indices in diffscreen are 0-based.  Errors are
:class:`~diffscreen.errors.LabelError` naming the label file and line.
Text files may carry a UTF-8 byte-order mark and CRLF line ends (what a
spreadsheet writes).  A frame number must be a whole number in
``0 ..`` :data:`MAX_FRAME_INDEX` (written as digits: ``1.5``, ``abc``,
``1e3`` or ``10**30`` are errors, never dropped).

:func:`collect_samples` pairs every frame of a list of inputs with its
label (a :class:`Sample`), for training, evaluation and the baselines.
"""

from __future__ import annotations

import csv
import io as _io
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from diffscreen.errors import FrameReadError, LabelError
from diffscreen.io.frame import CLASS_NAMES
from diffscreen.io.sources import open_source

__all__ = [
    "LabelRecord",
    "LabelTable",
    "read_expert_annotation",
    "read_dials_annotation",
    "read_label_csv",
    "read_cxi_labels",
    "read_labels",
    "write_label_csv",
    "label_format",
    "MAX_FRAME_INDEX",
    "Sample",
    "collect_samples",
]

_EXPERT = re.compile(r"^(\S+)\s+\[\s*(\S+?)\s*\]\s+(\S+)\s*$")
_DIALS = re.compile(r"^([-+]?\d+)\s+([-+]?\d+)\s+(\S+)\s*$")
_INTEGER = re.compile(r"^[-+]?\d+$")
#: Largest frame index (and spot count) a label file may give: no detector
#: file holds 2**31 frames, and numpy's int32 indices stay exact below it.
MAX_FRAME_INDEX = 2**31 - 1
_CSV_COLUMNS = ("file", "frame", "label")
_EXPERT_FILE = "expert_annotation.txt"


@dataclass(frozen=True)
class LabelRecord:
    """The label of one frame.

    Attributes
    ----------
    file : str
        Data file (or ``file.h5:/dataset`` spec) as the label file names it;
        a bare name matches that file in any folder (:class:`LabelTable`).
    frame : int
        0-based frame index in ``file``.
    label : str
        ``"hit"``, ``"maybe"`` or ``"miss"`` (:data:`~diffscreen.io.frame.CLASS_NAMES`).
    n_spots : int or None
        Bragg spot count, where the label file gives one.
    source : str or None
        The label file this record was read from (not compared).
    line : int or None
        Its 1-based line in ``source`` (not compared).
    """

    file: str
    frame: int
    label: str
    n_spots: int | None = None
    source: str | None = field(default=None, compare=False)
    line: int | None = field(default=None, compare=False)

    def where(self) -> str:
        """``"labels.csv line 7"``-style provenance for messages."""
        if self.source is None:
            return "a label record"
        return f"{self.source} line {self.line}" if self.line else self.source


# --------------------------------------------------------------------------- text files


def _check_label_file(path) -> None:
    """Refuse a missing label file, a directory, FIFO, socket or device without opening it."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise LabelError("no such label file", path=path) from None
    except OSError as exc:
        raise LabelError(f"cannot read the label file ({exc.strerror or exc})", path=path) from exc
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file (a FIFO, socket or device)"
        raise LabelError(f"the label file is {kind}; refused without reading it", path=path)


def _lines(path) -> list[tuple[int, str]]:
    """Non-blank, non-comment lines with their 1-based numbers (BOM and CRLF handled)."""
    _check_label_file(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise LabelError("not a text label file (not UTF-8)", path=path) from None
    except OSError as exc:
        raise LabelError(f"cannot read the label file ({exc.strerror or exc})", path=path) from exc
    if "\x00" in text:
        raise LabelError("not a text label file (it holds NUL bytes)", path=path)
    return [(n, s.strip()) for n, s in enumerate(text.splitlines(), 1) if s.strip() and not s.lstrip().startswith("#")]


def _whole_number(text: str, what: str, path, line: int, *, low: int = 0, hint: str = "") -> int:
    """A frame index or spot count written as digits, within ``low .. MAX_FRAME_INDEX``.

    Raises
    ------
    LabelError
        Naming the label file, the line and the value (``1.5``, ``abc``,
        ``10**30``, a negative value).
    """
    text = text.strip()
    if not _INTEGER.match(text):
        raise LabelError(f"line {line}: {what} {text!r} is not an integer", path=path)
    if len(text.lstrip("+-").lstrip("0")) > 12 and not text.startswith("-"):  # never int() a 5000-digit string
        raise LabelError(f"line {line}: {what} {text[:40]}{'...' if len(text) > 40 else ''} is larger than any "
                         f"file holds (at most {MAX_FRAME_INDEX})", path=path)
    value = int(text[:14]) if len(text.lstrip("+-").lstrip("0")) > 12 else int(text)  # a huge negative stays < 0
    if value < low:
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise LabelError(f"line {line}: {what} {shown} is {'negative' if low == 0 else f'below {low}'}{hint}",
                         path=path)
    if value > MAX_FRAME_INDEX:
        raise LabelError(f"line {line}: {what} {value} is larger than any file holds (at most {MAX_FRAME_INDEX})",
                         path=path)
    return value


def _class(word: str, path, line: int, classes=CLASS_NAMES) -> str:
    name = word.strip().lower()
    if name not in classes:
        raise LabelError(f"line {line}: unknown class {word!r}; expected one of {', '.join(classes)}", path=path)
    return name


def _no_duplicates(records: list[LabelRecord], path) -> list[LabelRecord]:
    seen: dict[tuple[str, int], LabelRecord] = {}
    for r in records:
        key = (r.file, r.frame)
        if key in seen:
            raise LabelError(f"line {r.line}: frame {r.frame} of {r.file} is labelled again "
                             f"(first on line {seen[key].line})", path=path)
        seen[key] = r
    return records


def read_expert_annotation(path) -> list[LabelRecord]:
    """Read a CXIDB-76 ``expert_annotation.txt``.

    Parameters
    ----------
    path : str or Path
        Lines ``<file> [<1-based frame>] HIT|MAYBE|MISS`` (Ke et al. 2018;
        fv5080 repository).

    Returns
    -------
    list of LabelRecord
        In file order; ``frame`` 0-based (``[3]`` -> 2), ``n_spots`` None.

    Raises
    ------
    LabelError
        A malformed line, a frame index below 1, an unknown class, or a
        frame labelled twice; the message gives the line number.
    """
    records = []
    for n, line in _lines(path):
        m = _EXPERT.match(line)
        if not m:
            raise LabelError(f"line {n}: expected '<file> [<1-based frame>] HIT|MAYBE|MISS', got {line!r}", path=path)
        idx = _whole_number(m.group(2), "frame index", path, n, low=1, hint=" (indices here are 1-based)")
        records.append(LabelRecord(m.group(1), idx - 1, _class(m.group(3), path, n), None, str(path), n))
    return _no_duplicates(records, path)


def read_dials_annotation(path, *, threshold: int | None = None, file: str | None = None,
                          n_frames: int | None = None) -> list[LabelRecord]:
    """Read a CXIDB-76 ``dials_annotation.txt`` (spot-finder labels).

    Parameters
    ----------
    path : str or Path
        Lines ``%05d <n_spots> Hit|Miss``; the index is 1-based (the fv5080
        script prints ``img_number + 1``) and frames with no spot are absent.
    threshold : int, optional
        Relabel: ``hit`` if ``n_spots >= threshold`` else ``miss``.  By default
        the file's Hit/Miss is kept (its per-run thresholds are in
        ``annotation_notes``: L498 30, LG36 20, LN83 15, LN84 30, LO19 50).
    file : str, optional
        Data file the indices refer to.  By default the file named in
        ``expert_annotation.txt`` beside ``path``.
    n_frames : int, optional
        Frames in the run; when given, the frames the file leaves out are
        added as ``miss`` with ``n_spots=0``.

    Returns
    -------
    list of LabelRecord
        ``label`` "hit" or "miss", ``n_spots`` set; sorted by frame.

    Raises
    ------
    LabelError
        A malformed line (with its number), an index below 1 or beyond
        ``n_frames``, a verdict other than Hit/Miss, or no ``file`` given and
        no ``expert_annotation.txt`` beside ``path`` to take it from.
    """
    file = file if file is not None else _data_file_beside(path)
    records = []
    for n, line in _lines(path):
        m = _DIALS.match(line)
        if not m:
            raise LabelError(f"line {n}: expected '<1-based frame> <n_spots> Hit|Miss', got {line!r}", path=path)
        idx = _whole_number(m.group(1), "frame", path, n, low=1, hint=" (indices here are 1-based)")
        spots, verdict = _whole_number(m.group(2), "spot count", path, n), m.group(3).lower()
        if verdict not in ("hit", "miss"):
            raise LabelError(f"line {n}: unknown verdict {m.group(3)!r}; expected Hit or Miss", path=path)
        if n_frames is not None and idx > n_frames:
            raise LabelError(f"line {n}: frame {idx} (1-based) is beyond the run's {n_frames} frames", path=path)
        if threshold is not None:
            verdict = "hit" if spots >= threshold else "miss"
        records.append(LabelRecord(file, idx - 1, verdict, spots, str(path), n))
    _no_duplicates(records, path)
    if n_frames is not None:
        seen = {r.frame for r in records}
        records += [LabelRecord(file, i, "miss", 0, str(path), None) for i in range(n_frames) if i not in seen]
    return sorted(records, key=lambda r: r.frame)


def _data_file_beside(path) -> str:
    expert = Path(path).with_name(_EXPERT_FILE)
    if expert.is_file():
        for _, line in _lines(expert):
            m = _EXPERT.match(line)
            if m:
                return m.group(1)
    raise LabelError(f"a DIALS annotation does not name its data file and there is no {_EXPERT_FILE} beside it "
                     "to take the name from; pass file=", path=path)


def read_label_csv(path, *, classes=CLASS_NAMES) -> list[LabelRecord]:
    """Read a CSV label file.

    Parameters
    ----------
    path : str or Path
        Header ``file,frame,label`` (any order, optional ``n_spots`` column);
        ``frame`` 0-based; ``label`` hit/maybe/miss in any case.
    classes : sequence of str
        The class names a label may take (lower case; default hit/maybe/miss;
        e.g. the DiffraNet classes for ``train --task diffranet``).

    Returns
    -------
    list of LabelRecord
        In file order.

    Raises
    ------
    LabelError
        Missing columns, a malformed row (with its line number), a negative
        frame, an unknown class, or a frame labelled twice.
    """
    lines = _lines(path)
    numbers = [n for n, _ in lines]
    reader = csv.DictReader(_io.StringIO("\n".join(line for _, line in lines)))
    records = []
    try:
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        first = numbers[0] if numbers else 1
        missing = [c for c in _CSV_COLUMNS if c not in header]
        if missing:
            raise LabelError(f"line {first}: CSV header lacks column(s) {', '.join(missing)}; expected "
                             "file,frame,label", path=path)
        twice = sorted({h for h in header if header.count(h) > 1})
        if twice:
            raise LabelError(f"line {first}: CSV header names column(s) {', '.join(twice)} twice", path=path)
        reader.fieldnames = header
        for row in reader:
            n = numbers[min(reader.line_num, len(numbers)) - 1]
            records.append(_csv_record(row, path, n, classes))
    except csv.Error as exc:
        n = numbers[min(max(reader.line_num, 1), len(numbers)) - 1] if numbers else 1
        raise LabelError(f"line {n}: malformed CSV ({exc})", path=path) from None
    return _no_duplicates(records, path)


def _csv_record(row: dict, path, n: int, classes=CLASS_NAMES) -> LabelRecord:
    if None in row or any(row.get(c) in (None, "") for c in _CSV_COLUMNS):
        shown = str(row) if len(str(row)) <= 200 else str(row)[:197] + "..."
        raise LabelError(f"line {n}: expected file,frame,label values, got {shown}", path=path)
    frame = _whole_number(row["frame"], "frame", path, n, hint=" (frames are 0-based)")
    spots = row.get("n_spots")
    spots = _whole_number(spots, "n_spots", path, n) if spots not in (None, "") and spots.strip() else None
    return LabelRecord(row["file"].strip(), frame, _class(row["label"], path, n, classes), spots, str(path), n)


def write_label_csv(records, path) -> Path:
    """Write labels as CSV (``file,frame,label,n_spots``), atomically.

    Parameters
    ----------
    records : iterable of LabelRecord
    path : str or Path

    Returns
    -------
    Path
        ``path``; :func:`read_label_csv` reads back the same records.
    """
    from diffscreen.io.atomic import atomic_write_text

    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*_CSV_COLUMNS, "n_spots"])
    for r in records:
        w.writerow([r.file, r.frame, r.label, "" if r.n_spots is None else r.n_spots])
    atomic_write_text(path, buf.getvalue())
    return Path(path)


# --------------------------------------------------------------------------- CXI


def read_cxi_labels(path, *, classes=CLASS_NAMES) -> list[LabelRecord]:
    """Labels stored in a CXI file (``/entry_k/result_1/label``).

    Parameters
    ----------
    path : str or Path
        A CXI file as :class:`~diffscreen.io.cxi.CXIWriter` writes it.
    classes : sequence of str
        The class names a label may take (default hit/maybe/miss; e.g. the
        DiffraNet classes of ``simulate --task diffranet``).

    Returns
    -------
    list of LabelRecord
        ``file`` = ``path``; ``frame`` numbered over all ``entry_k`` groups as
        :class:`~diffscreen.io.hdf5.CXISource` numbers them; frames labelled
        −1 are left out; ``n_spots`` from ``result_1/n_spots`` where present.

    Raises
    ------
    LabelError
        A label index outside ``class_names``, or a class name that is not
        one of ``classes``.
    FrameReadError
        The file cannot be opened.
    """
    from diffscreen.io.hdf5 import CXISource

    path = os.fspath(path)
    records = []
    with CXISource(path) as src:
        try:
            for name, start, n, g in _entries(src):
                records += _cxi_entry_labels(g, name, start, n, path, tuple(classes))
        except (KeyError, OSError, ValueError, TypeError, RuntimeError, IndexError) as exc:
            if isinstance(exc, (LabelError, FrameReadError)):
                raise
            raise LabelError(f"cannot read the labels ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})",
                             path=path) from exc
    return records


def _cxi_entry_labels(g, name: str, start: int, n_frames: int, path: str, classes=CLASS_NAMES) -> list[LabelRecord]:
    """The labelled frames of one ``entry_k`` group (``n_frames`` frames, numbered from ``start``)."""
    import numpy as np

    lab = g.get("result_1/label")
    if lab is None:
        return []
    if lab.ndim != 1 or lab.dtype.kind not in "iu" or lab.shape[0] > n_frames:
        raise LabelError(f"{name}/result_1/label has shape {lab.shape} and type {lab.dtype}; expected at most "
                         f"({n_frames},) integers, one per frame", path=path)
    names = [str(_text(n)).lower() for n in np.atleast_1d(g["result_1"].attrs.get("class_names", CLASS_NAMES))]
    spots = g.get("result_1/n_spots")
    usable = spots is not None and spots.ndim == 1 and spots.dtype.kind in "iu" and spots.shape[0] <= n_frames
    spots = spots[()] if usable else None
    records = []
    for j, k in enumerate(lab[()]):
        if k < 0:
            continue
        if k >= len(names) or names[k] not in classes:
            raise LabelError(f"{name}/result_1/label[{j}] = {k} is not one of {classes} "
                             f"(class_names {names})", path=path)
        n = None if spots is None or j >= len(spots) or spots[j] < 0 else int(spots[j])
        records.append(LabelRecord(path, start + j, names[k], n, path, None))
    return records


def _entries(src):
    """``(name, first frame, frames, group)`` of each ``entry_k`` of a CXISource."""
    start = 0
    for name in src.entries:
        g = src._f[name]
        ds = g["data_1/data"]
        n = ds.shape[0] if ds.ndim == 3 else 1
        yield name, start, n, g
        start += n


def _text(v):
    return v.decode() if isinstance(v, bytes) else v


# --------------------------------------------------------------------------- detection


def label_format(path) -> str:
    """Which label format a file holds, from its content.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    {"cxi", "frames", "csv", "expert", "dials", "empty"}
        ``"frames"``: a frame file without labels (CBF, MarCCD, a bare HDF5
        dataset, ...); ``"empty"``: no content lines.

    Raises
    ------
    LabelError
        Missing file, or text in none of the formats.
    """
    from diffscreen.io import hdf5
    from diffscreen.io.base import read_head
    from diffscreen.io.sources import readers, split_spec

    file, dataset = split_spec(os.fspath(path))
    _check_label_file(file)
    try:
        head, _ = read_head(file)
    except FrameReadError as exc:
        raise LabelError(exc.problem, path=path) from exc
    if hdf5.understand(file, head):
        return "frames" if dataset is not None or not _is_cxi(file) else "cxi"
    if any(r.understand(file, head) for r in readers()):
        return "frames"
    lines = _lines(file)
    if not lines:
        return "empty"
    n, first = lines[0]
    if "," in first and "file" in first.lower():
        return "csv"
    if _EXPERT.match(first):
        return "expert"
    if _DIALS.match(first):
        return "dials"
    raise LabelError(f"line {n}: not a label file: expected a CSV header 'file,frame,label', "
                     f"'<file> [<frame>] HIT|MAYBE|MISS' or '<frame> <n_spots> Hit|Miss', got {first[:80]!r}",
                     path=path)


def _is_cxi(file: str) -> bool:
    from diffscreen.io.hdf5 import _h5open, hdf5_layout

    try:
        f = _h5open(file)
    except FrameReadError:
        return False
    with f:
        return hdf5_layout(f) == "cxi"


def read_labels(path, *, classes=CLASS_NAMES) -> list[LabelRecord]:
    """Read labels from any supported file, recognised by content.

    Parameters
    ----------
    path : str or Path
        An expert or DIALS annotation, a CSV label file, or a CXI file with
        ``result_1/label``.  A frame file that holds no labels (CBF, MarCCD,
        a CXIDB-76 run, ``file.h5:/dataset``) gives an empty list, so data
        files can be passed where labels may be embedded.
    classes : sequence of str
        The class names a CSV or CXI label may take (default hit/maybe/miss);
        expert and DIALS annotations are always hit/maybe/miss.

    Returns
    -------
    list of LabelRecord

    Raises
    ------
    LabelError
        Unrecognised, empty or malformed label file (with the line number).
    """
    kind = label_format(path)
    if kind == "cxi":
        return read_cxi_labels(path, classes=classes)
    if kind == "empty":
        raise LabelError("the label file is empty (no label lines)", path=path)
    if kind == "frames":
        return []
    if kind == "csv":
        return read_label_csv(path, classes=classes)
    reader = {"expert": read_expert_annotation, "dials": read_dials_annotation}[kind]
    return reader(path)


# --------------------------------------------------------------------------- lookup


def _split(spec: str) -> tuple[str, str]:
    i = spec.find(":/")
    return (spec, "") if i <= 0 else (spec[:i], spec[i:])


def _full_key(spec: str) -> str:
    file, ds = _split(os.fspath(spec))
    return os.path.normpath(os.path.abspath(file)) + ds


def _base_key(spec: str) -> str:
    file, ds = _split(os.fspath(spec))
    return os.path.basename(file) + ds


class LabelTable:
    """Look up the label of ``(file, frame)``.

    A data file matches a label record when their full paths agree
    (relative paths taken from the current directory), or else when their
    base names agree and only one labelled file has that base name (the
    CXIDB-76 annotations name ``r0095_2000.h5`` without a folder).

    Examples
    --------
    >>> t = LabelTable.from_records([LabelRecord("r0095_2000.h5", 2, "hit")])
    >>> t.get("/data/LN84/r0095_2000.h5", 2)
    'hit'
    >>> t.get("/data/LN84/r0095_2000.h5", 3) is None
    True
    """

    def __init__(self):
        self._records: dict[tuple[str, int], LabelRecord] = {}
        self._files: dict[str, list[LabelRecord]] = {}
        self._bases: dict[str, set[str]] = {}
        self._resolved: dict[str, str | None] = {}

    @classmethod
    def from_records(cls, records) -> "LabelTable":
        """Build a table.

        Parameters
        ----------
        records : iterable of LabelRecord

        Returns
        -------
        LabelTable

        Raises
        ------
        LabelError
            If two records give one frame different labels (naming both).
        """
        table = cls()
        for r in records:
            table.add(r)
        return table

    def add(self, record: LabelRecord) -> None:
        """Add one record (a repeat with the same label is ignored).

        Raises
        ------
        LabelError
            If the frame already has a different label.
        """
        key = (_full_key(record.file), int(record.frame))
        old = self._records.get(key)
        if old is not None:
            if old.label != record.label:
                raise LabelError(f"frame {record.frame} of {record.file} is labelled {old.label!r} by "
                                 f"{old.where()} and {record.label!r} by {record.where()}",
                                 path=record.source, frame=record.frame)
            return
        self._records[key] = record
        self._files.setdefault(key[0], []).append(record)
        self._bases.setdefault(_base_key(record.file), set()).add(key[0])
        self._resolved.clear()

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self):
        return iter(self._records.values())

    def _resolve(self, spec: str) -> str | None:
        spec = os.fspath(spec)
        if spec not in self._resolved:
            full = _full_key(spec)
            if full in self._files:
                self._resolved[spec] = full
            else:
                keys = self._bases.get(_base_key(spec), set())
                if len(keys) > 1:
                    raise LabelError(f"labels for several files named {_base_key(spec)} ({', '.join(sorted(keys))}) "
                                     f"could apply to {spec}; name files by full path in the label files")
                self._resolved[spec] = next(iter(keys)) if keys else None
        return self._resolved[spec]

    def record(self, file, frame: int) -> LabelRecord | None:
        """The record labelling a frame, or None.

        Parameters
        ----------
        file : str or Path
            Data file or spec, full path or base name.
        frame : int
            0-based.

        Raises
        ------
        LabelError
            If the base name matches several labelled files.
        """
        key = self._resolve(file)
        return None if key is None else self._records.get((key, int(frame)))

    def get(self, file, frame: int) -> str | None:
        """The label ("hit", "maybe" or "miss") of a frame, or None if unlabelled.

        Parameters
        ----------
        file : str or Path
        frame : int
            0-based.
        """
        r = self.record(file, frame)
        return None if r is None else r.label

    def records_for(self, file) -> list[LabelRecord]:
        """All records that label frames of ``file``.

        Parameters
        ----------
        file : str or Path

        Returns
        -------
        list of LabelRecord
        """
        key = self._resolve(file)
        return [] if key is None else list(self._files[key])

    def counts(self) -> dict[str, int]:
        """Frames per class.

        Returns
        -------
        dict of str -> int
            Every class of :data:`~diffscreen.io.frame.CLASS_NAMES` (0 if absent).
        """
        out = {c: 0 for c in CLASS_NAMES}
        for r in self._records.values():
            out[r.label] = out.get(r.label, 0) + 1
        return out

    def validate(self, sources: dict) -> None:
        """Check that every label for these data files names a frame they hold.

        Parameters
        ----------
        sources : dict of str -> int
            Data file (spec) -> its number of frames (``len(open_source(spec))``).

        Raises
        ------
        LabelError
            Naming the label file and line, the data file, and the frame that
            does not exist.
        """
        for spec, n in sources.items():
            for r in self.records_for(spec):
                if not 0 <= r.frame < n:
                    line = f"line {r.line}: " if r.line else ""
                    raise LabelError(f"{line}labels frame {r.frame} (0-based) of {spec}, which holds {n} frame(s) "
                                     f"(0 to {n - 1})", path=r.source or "labels", frame=r.frame)


@dataclass(frozen=True)
class Sample:
    """One labelled frame."""

    source: str  #: input spec (path, or ``file.h5:/dataset``)
    index: int  #: 0-based frame index
    label: int  #: class index into the class names


def collect_samples(inputs, label_files=(), class_names=("hit", "maybe", "miss")) -> tuple[list[Sample], dict]:
    """Pair every frame of ``inputs`` with its label.

    Parameters
    ----------
    inputs : sequence of str
        Input specs (already expanded).
    label_files : sequence of str
        Label files; if empty, labels are read from each input itself (a simulated CXI run stores them).
    class_names : sequence of str

    Returns
    -------
    samples : list of Sample
        In input order, frame order within each input.
    info : dict
        ``n_frames``, ``n_unlabelled``, ``counts`` per class and ``inputs``.

    Raises
    ------
    LabelError
        A label names a frame that does not exist, or no frame has a label.
    """
    records = []
    classes = tuple(str(c).lower() for c in class_names)
    for lf in label_files:
        records.extend(read_labels(lf, classes=classes))
    lengths = {}
    for spec in inputs:
        with open_source(spec) as src:
            lengths[spec] = len(src)
        if not label_files:
            records.extend(read_labels(spec, classes=classes))
    table = LabelTable.from_records(records)
    if label_files:
        table.validate(lengths)
    names = list(class_names)
    samples, unlabelled = [], 0
    for spec, n in lengths.items():
        for i in range(n):
            lab = table.get(spec, i)
            if lab is None:
                unlabelled += 1
                continue
            if lab not in names:
                raise LabelError(f"label {lab!r} is not one of {names}", path=spec, frame=i)
            samples.append(Sample(spec, i, names.index(lab)))
    if not samples:
        raise LabelError(f"none of the {sum(lengths.values())} frames in {len(inputs)} input(s) has a label")
    counts = {c: sum(s.label == k for s in samples) for k, c in enumerate(names)}
    info = {"inputs": list(inputs), "n_frames": sum(lengths.values()), "n_unlabelled": unlabelled, "counts": counts}
    return samples, info
