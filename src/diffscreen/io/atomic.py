"""Write-then-rename helpers so that no output file is ever half-written."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["temporary_path", "atomic_write_text"]


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.part-{os.getpid()}")


@contextlib.contextmanager
def temporary_path(path):
    """Yield a temporary sibling of ``path``; rename it to ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    with temporary_path(path) as tmp:
        Path(tmp).write_text(text)
