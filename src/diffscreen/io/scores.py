"""Reading a ``scores.csv`` back (what ``diffscreen screen`` writes), refusing a malformed one clearly.

The file has a header row ``file,frame,<scores>,label`` (see
:mod:`diffscreen.screen.runner`); the CDI screen writes ``p_<class>``
columns instead of ``label``.  A spreadsheet's UTF-8 BOM and CRLF line ends
are accepted.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path

from diffscreen.errors import LabelError

__all__ = ["ScoreRow", "read_scores"]


class ScoreRow(dict):
    """One row of a scores file: the columns by name, plus :attr:`frame` as an int and :attr:`line`."""

    frame: int
    line: int

    def number(self, column: str) -> float:
        """Column ``column`` as a float (a finite number).

        Raises
        ------
        LabelError
            The value is not a finite number.
        """
        try:
            v = float(self[column])
        except (TypeError, ValueError):
            v = math.nan
        if not math.isfinite(v):
            raise LabelError(f"line {self.line}: {column} {self[column]!r} is not a finite number", path=self.path)
        return v


def read_scores(path, required=("file", "frame", "label")) -> Iterator[ScoreRow]:
    """The rows of a scores file, checked.

    Parameters
    ----------
    path : str or Path
        A ``scores.csv``.
    required : sequence of str
        Columns the header must name.

    Yields
    ------
    ScoreRow
        Each data row; ``row.frame`` is the 0-based frame index (int).

    Raises
    ------
    LabelError
        The file cannot be read, is empty, lacks a required column, or a row
        has the wrong number of fields or a frame that is not a non-negative
        integer (the message names the line).
    """
    path = Path(path)
    try:
        fh = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise LabelError(f"cannot read the scores file ({exc.strerror})", path=path) from None
    with fh:
        try:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header:
                raise LabelError("the scores file is empty", path=path)
            header = [h.strip() for h in header]
            missing = [c for c in required if c not in header]
            if missing:
                raise LabelError(f"not a scores file: the header lacks {', '.join(missing)}", path=path)
            for fields in reader:
                if not fields:
                    continue
                line = reader.line_num
                if len(fields) != len(header):
                    raise LabelError(f"line {line}: {len(fields)} fields, the header has {len(header)}", path=path)
                row = ScoreRow(zip(header, fields))
                row.line, row.path = line, str(path)
                try:
                    row.frame = int(row["frame"]) if "frame" in row else -1
                except ValueError:
                    raise LabelError(f"line {line}: frame {row['frame']!r} is not an integer", path=path) from None
                if "frame" in row and row.frame < -1:
                    raise LabelError(f"line {line}: frame {row.frame} is negative", path=path)
                yield row
        except (UnicodeDecodeError, csv.Error) as exc:
            raise LabelError(f"not a CSV scores file ({exc})", path=path) from None
