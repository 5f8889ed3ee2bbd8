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
"""

from __future__ import annotations

import csv
import io as _io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from diffscreen.errors import FrameReadError, LabelError
from diffscreen.io.frame import CLASS_NAMES

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
]

_EXPERT = re.compile(r"^(\S+)\s+\[\s*(-?\d+)\s*\]\s+(\S+)\s*$")
_DIALS = re.compile(r"^(-?\d+)\s+(-?\d+)\s+(\S+)\s*$")
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


def _lines(path) -> list[tuple[int, str]]:
    """Non-blank, non-comment lines with their 1-based numbers."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LabelError("no such label file", path=path) from None
    except UnicodeDecodeError:
        raise LabelError("not a text label file (not UTF-8)", path=path) from None
    except OSError as exc:
        raise LabelError(f"cannot read the label file ({exc.strerror or exc})", path=path) from exc
    return [(n, s.strip()) for n, s in enumerate(text.splitlines(), 1) if s.strip() and not s.lstrip().startswith("#")]


def _class(word: str, path, line: int) -> str:
    name = word.strip().lower()
    if name not in CLASS_NAMES:
        raise LabelError(f"line {line}: unknown class {word!r}; expected one of {', '.join(CLASS_NAMES)}", path=path)
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
        idx = int(m.group(2))
        if idx < 1:
            raise LabelError(f"line {n}: frame index [{idx}] is not 1-based (expected >= 1)", path=path)
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
        idx, spots, verdict = int(m.group(1)), int(m.group(2)), m.group(3).lower()
        if idx < 1 or spots < 0:
            raise LabelError(f"line {n}: frame {idx} must be >= 1 and spot count {spots} >= 0", path=path)
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


def read_label_csv(path) -> list[LabelRecord]:
    """Read a CSV label file.

    Parameters
    ----------
    path : str or Path
        Header ``file,frame,label`` (any order, optional ``n_spots`` column);
        ``frame`` 0-based; ``label`` hit/maybe/miss in any case.

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
    text = "\n".join(line for _, line in _lines(path))
    reader = csv.DictReader(_io.StringIO(text))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in _CSV_COLUMNS if c not in header]
    if missing:
        raise LabelError(f"line 1: CSV header lacks column(s) {', '.join(missing)}; expected file,frame,label",
                         path=path)
    reader.fieldnames = header
    numbers = [n for n, _ in _lines(path)]
    records = []
    for row in reader:
        n = numbers[reader.line_num - 1]
        records.append(_csv_record(row, path, n))
    return _no_duplicates(records, path)


def _csv_record(row: dict, path, n: int) -> LabelRecord:
    if None in row or any(row.get(c) in (None, "") for c in _CSV_COLUMNS):
        raise LabelError(f"line {n}: expected file,frame,label values, got {row}", path=path)
    try:
        frame = int(row["frame"])
        spots = row.get("n_spots")
        spots = int(spots) if spots not in (None, "") else None
    except ValueError:
        raise LabelError(f"line {n}: frame {row['frame']!r} or n_spots is not an integer", path=path) from None
    if frame < 0:
        raise LabelError(f"line {n}: frame {frame} is negative (frames are 0-based)", path=path)
    return LabelRecord(row["file"].strip(), frame, _class(row["label"], path, n), spots, str(path), n)


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
    from diffscreen.io._atomic import atomic_write_text

    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*_CSV_COLUMNS, "n_spots"])
    for r in records:
        w.writerow([r.file, r.frame, r.label, "" if r.n_spots is None else r.n_spots])
    atomic_write_text(path, buf.getvalue())
    return Path(path)


# --------------------------------------------------------------------------- CXI


def read_cxi_labels(path) -> list[LabelRecord]:
    """Labels stored in a CXI file (``/entry_k/result_1/label``).

    Parameters
    ----------
    path : str or Path
        A CXI file as :class:`~diffscreen.io.cxi.CXIWriter` writes it.

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
        hit/maybe/miss.
    FrameReadError
        The file cannot be opened.
    """
    import numpy as np

    from diffscreen.io.hdf5 import CXISource

    path = os.fspath(path)
    records = []
    with CXISource(path) as src:
        for name, start, g in _entries(src):
            lab = g.get("result_1/label")
            if lab is None:
                continue
            names = [str(_text(n)).lower() for n in np.atleast_1d(g["result_1"].attrs.get("class_names", CLASS_NAMES))]
            spots = g.get("result_1/n_spots")
            spots = None if spots is None else spots[()]
            for j, k in enumerate(lab[()]):
                if k < 0:
                    continue
                if k >= len(names) or names[k] not in CLASS_NAMES:
                    raise LabelError(f"{name}/result_1/label[{j}] = {k} is not one of {CLASS_NAMES} "
                                     f"(class_names {names})", path=path)
                n = None if spots is None or j >= len(spots) or spots[j] < 0 else int(spots[j])
                records.append(LabelRecord(path, start + j, names[k], n, path, None))
    return records


def _entries(src):
    start = 0
    for name in src.entries:
        g = src._f[name]
        yield name, start, g
        ds = g["data_1/data"]
        start += ds.shape[0] if ds.ndim == 3 else 1


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
    from diffscreen.io.sources import read_head, readers, split_spec

    file, dataset = split_spec(os.fspath(path))
    if not os.path.isfile(file):
        raise LabelError("no such label file", path=path)
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


def read_labels(path) -> list[LabelRecord]:
    """Read labels from any supported file, recognised by content.

    Parameters
    ----------
    path : str or Path
        An expert or DIALS annotation, a CSV label file, or a CXI file with
        ``result_1/label``.  A frame file that holds no labels (CBF, MarCCD,
        a CXIDB-76 run, ``file.h5:/dataset``) gives an empty list, so data
        files can be passed where labels may be embedded.

    Returns
    -------
    list of LabelRecord

    Raises
    ------
    LabelError
        Unrecognised or malformed label file (with the line number).
    """
    kind = label_format(path)
    if kind == "cxi":
        return read_cxi_labels(path)
    if kind in ("frames", "empty"):
        return []
    reader = {"csv": read_label_csv, "expert": read_expert_annotation, "dials": read_dials_annotation}[kind]
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
