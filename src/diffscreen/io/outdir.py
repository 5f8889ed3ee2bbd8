"""The output folder of a run: one writer at a time, no stale files, no full disk.

A run that writes into a folder (``diffscreen screen --out DIR``) holds
:class:`OutputLock` on it: ``DIR/.diffscreen.lock`` holds the PID and host of
the run.  A second run into the same folder is refused with a message naming
that PID; a lock left by a process that no longer exists (kill -9, a crash,
a reboot) is taken over.  While it holds the lock, a run removes what killed
runs left behind (temporary ``.NAME.part-PID`` files, see
:mod:`diffscreen.io.atomic`) and the outputs it will not write itself.

:func:`check_free_space` refuses a write that would fill the disk, before
HDF5 starts it: HDF5 cannot recover from ENOSPC in the middle of a write (its
file stays open with unwritable cached metadata, and the process crashes when
it exits).
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
from pathlib import Path

from diffscreen.errors import OutputError

__all__ = ["OutputLock", "prepare_output_dir", "remove_stale_parts", "remove_outputs", "check_free_space",
           "output_error", "FREE_SPACE_MARGIN"]

LOCK_NAME = ".diffscreen.lock"
#: Bytes that must stay free on the output file system after a write (HDF5 metadata, CSV rows).
FREE_SPACE_MARGIN = 4 << 20
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def prepare_output_dir(out) -> Path:
    """Create the output folder ``out`` (and its parents) if needed.

    Parameters
    ----------
    out : str or Path

    Returns
    -------
    Path

    Raises
    ------
    OutputError
        ``out`` exists and is not a folder, or cannot be created.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError("the output path exists and is not a folder; give a folder for --out", path=out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder ({exc.strerror})", path=out) from None
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class OutputLock:
    """Exclusive use of an output folder by one run (a lock file with its PID).

    Parameters
    ----------
    out : str or Path
        The output folder (created if missing).

    Raises
    ------
    OutputError
        From :meth:`acquire`: another live process on this host holds the
        lock, the lock was taken by a process on another host, or the folder
        cannot be written.

    Examples
    --------
    >>> with OutputLock("out"):                   # doctest: +SKIP
    ...     ...                                   # write the outputs
    """

    def __init__(self, out):
        self.out = Path(out)
        self.path = self.out / LOCK_NAME
        self._held = False

    def _holder(self) -> tuple[int | None, str]:
        try:
            pid_s, _, host = self.path.read_text().strip().partition(" ")
            return int(pid_s), host
        except (OSError, ValueError):
            return None, ""

    def acquire(self) -> "OutputLock":
        prepare_output_dir(self.out)
        me = f"{os.getpid()} {socket.gethostname()}"
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                pid, host = self._holder()
                if pid is not None and host and host != socket.gethostname():
                    raise OutputError(f"another diffscreen run (PID {pid} on {host}) is writing to this folder; "
                                      f"wait for it, or remove {self.path} if that run is dead", path=self.out)
                if pid is not None and pid != os.getpid() and _alive(pid):
                    raise OutputError(f"another diffscreen run (PID {pid}) is writing to this folder; wait for it "
                                      "or give another --out", path=self.out)
                try:  # a stale lock (its process is gone): take it over
                    self.path.unlink()
                except FileNotFoundError:
                    pass
                continue
            except OSError as exc:
                raise output_error(exc, self.out) from None
            with os.fdopen(fd, "w") as fh:
                fh.write(me + "\n")
            self._held = True
            return self
        raise OutputError("could not take the output folder's lock (it keeps reappearing)", path=self.out)

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._held

    def release(self) -> None:
        if self._held:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            self._held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def remove_stale_parts(folder) -> list[Path]:
    """Delete the temporary ``.NAME.part-PID`` files that killed runs left in ``folder``.

    Call it only while holding :class:`OutputLock`: then no live run owns them.

    Returns
    -------
    list of Path
        The files removed.
    """
    gone = []
    folder = Path(folder)
    if not folder.is_dir():
        return gone
    for p in folder.glob(".*.part-*"):
        if p.is_file():
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def remove_outputs(folder, names) -> None:
    """Delete the outputs ``names`` of an earlier run in ``folder`` (absent ones are fine)."""
    for n in names:
        p = Path(folder) / n
        if p.is_file() or p.is_symlink():
            p.unlink()
        elif p.is_dir():
            shutil.rmtree(p)


def check_free_space(folder, nbytes: int) -> None:
    """Refuse to write ``nbytes`` into ``folder`` unless :data:`FREE_SPACE_MARGIN` stays free after it.

    Parameters
    ----------
    folder : str or Path
        An existing folder on the file system written to.
    nbytes : int
        Bytes about to be written (an upper bound: the uncompressed size).

    Raises
    ------
    OutputError
        Not enough free space.
    """
    free = shutil.disk_usage(folder).free
    if free < nbytes + FREE_SPACE_MARGIN:
        raise OutputError(f"disk full: {free / 2**20:.1f} MiB free, {(nbytes + FREE_SPACE_MARGIN) / 2**20:.1f} MiB "
                          "needed; free some space and run the same command again to resume", path=folder)


def output_error(exc: OSError, path) -> OutputError:
    """An :class:`OutputError` for an ``OSError`` raised while writing under ``path``."""
    if isinstance(exc, OutputError):
        return exc
    what = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
    if exc.errno in _WRITE_ERRNOS:
        what += "; free some space or give another --out, then run the same command again to resume"
    return OutputError(f"cannot write the outputs ({what})", path=exc.filename or path)
