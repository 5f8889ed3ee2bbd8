"""``diffscreen watch``: follow a folder as a detector writes into it, and screen each file once it is complete.

The folder is followed with ``watchfiles`` (inotify/FSEvents through the Rust
``notify`` crate; ``poll=True`` polls instead, for NFS, Lustre and GPFS,
where file-system events from other hosts never arrive).  Files already in
the folder are screened first.  A file is handed to the loop
(:class:`~diffscreen.live.loop.LiveLoop`) frame by frame once it is
complete:

CBF (uncompressed)
    every binary section is whole: the ``X-Binary-Size`` bytes after the
    section's ``\\x0c\\x1a\\x04\\xd5`` start marker are present, followed by
    the closing ``--CIF-BINARY-FORMAT-SECTION----`` boundary (imgCIF/CBF 1.5,
    the MIME header :func:`diffscreen.io.cbf.mime_fields` reads).
HDF5 / NeXus / CXI
    the file opens (a writer holding it open without SWMR keeps it locked, or
    leaves it unreadable) and its size and modification time have not
    changed for ``settle`` seconds; frames that appear later (a file written
    again) are screened as they appear, each once.  A file its writer writes
    under SWMR is read while it grows, frame by frame: every frame before the
    last row of chunks that holds data
    (:func:`~diffscreen.io.hdf5.written_frames`), the rest once the writer
    has closed it.
anything else (compressed CBF, SMV, MarCCD, TIFF, EDF, ...)
    the file opens and has not changed for ``settle`` seconds.

A file that does not open is retried, never reported as corrupt, until it has
stayed unchanged for ``give_up`` seconds; then it gets its error row (the
reader's own message).  A file still locked by its writer is retried for as
long as it stays locked.  Never is a frame screened twice: the loop's record
(scores.csv) is read at the start, and each file's screened frames are
remembered.  Hidden files (a leading dot, as detectors' temporary names
often have) are ignored.
"""

from __future__ import annotations

import fnmatch
import os
import time
from dataclasses import dataclass
from pathlib import Path

from diffscreen.errors import ConfigError
from diffscreen.io import open_source
from diffscreen.io.cbf import mime_fields
from diffscreen.live.loop import ErrorItem, FileItem, LiveLoop, LiveSummary
from diffscreen.screen.method import problem_of

__all__ = ["cbf_complete", "FolderWatcher", "watch"]

_MARK = b"--CIF-BINARY-FORMAT-SECTION--"
_CLOSE = b"--CIF-BINARY-FORMAT-SECTION----"
_START = b"\x0c\x1a\x04\xd5"
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def cbf_complete(data: bytes) -> bool:
    """Whether the bytes of an (uncompressed) CBF file hold every binary section whole.

    Parameters
    ----------
    data : bytes
        The file's bytes as read now.

    Returns
    -------
    bool
        True when there is at least one binary section and each has its MIME
        header, its ``X-Binary-Size`` bytes after the start marker and the
        closing boundary after them.
    """
    pos, n = 0, 0
    while True:
        i = data.find(_MARK, pos)
        if i < 0 or data.startswith(_CLOSE, i):
            if i >= 0:  # a closing boundary without its section: damaged, or a foreign layout
                pos = i + len(_CLOSE)
                continue
            return n > 0
        j = data.find(b"\r\n\r\n", i)
        if j < 0:
            return False
        try:
            size = mime_fields(data[i:j]).get("X-Binary-Size")
        except Exception:  # noqa: BLE001 - a header being written can hold half a number
            return False
        if size is None:
            return False
        k = data.find(_START, j, j + 16)
        if k < 0:
            return False
        end = k + len(_START) + size
        if len(data) < end:
            return False
        c = data.find(_CLOSE, end)
        if c < 0:
            return False
        pos, n = c + len(_CLOSE), n + 1


@dataclass
class _File:
    size: int = -1
    mtime: int = -1
    changed: float = 0.0  # monotonic time of the last change seen
    offered: int = 0  # frames handed to the loop (indices below it)
    finished: bool = False  # a single-shot file (CBF, ...) handed over whole, or given up
    locked: bool = False


class FolderWatcher:
    """Decide, file by file, when a folder's files are complete, and hand their frames to a loop.

    Parameters
    ----------
    directory : str or Path
    loop : LiveLoop
        Started.
    pattern : str
        ``fnmatch`` pattern on the path relative to ``directory`` (default every file).
    settle : float
        Seconds a non-CBF file must stay unchanged (and open) before it is screened.
    give_up : float
        Seconds a file that does not open must stay unchanged before it is an error.
    """

    def __init__(self, directory, loop: LiveLoop, *, pattern: str = "*", settle: float = 1.0, give_up: float = 30.0):
        self.dir = Path(directory)
        if not self.dir.is_dir():
            raise ConfigError(f"{directory}: not a folder to watch")
        self.loop, self.pattern, self.settle, self.give_up = loop, pattern, float(settle), float(give_up)
        self.files: dict[str, _File] = {}
        self.last_frame = time.monotonic()

    def name_of(self, path) -> str | None:
        """The name scores.csv gives a file (``directory/relative``), or None when it is not watched."""
        try:
            rel = os.path.relpath(os.path.abspath(path), os.path.abspath(self.dir))
        except ValueError:
            return None
        if rel.startswith("..") or any(part.startswith(".") for part in Path(rel).parts):
            return None
        if not fnmatch.fnmatch(rel, self.pattern) and not fnmatch.fnmatch(os.path.basename(rel), self.pattern):
            return None
        return str(self.dir / rel)

    def scan(self) -> None:
        """Note every file now in the folder (at the start, and as the polling fallback's safety net)."""
        for root, dirs, files in os.walk(self.dir):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in sorted(files):
                self.touch(os.path.join(root, f))

    def touch(self, path) -> None:
        """A file was added or changed: look at it on the next :meth:`check`."""
        name = self.name_of(path)
        if name is not None and name not in self.files:
            self.files[name] = _File(changed=time.monotonic())
            done = self.loop.done_frames(name)
            if -1 in done:
                self.files[name].finished = True
            elif done:
                self.files[name].offered = 0  # frames already screened are skipped by index below

    def pending(self) -> int:
        """Files not yet handed over whole."""
        return sum(1 for f in self.files.values() if not f.finished)

    def check(self) -> int:
        """Hand over the frames of every file that is complete now; the number of frames handed over."""
        n = 0
        now = time.monotonic()
        for name, st in list(self.files.items()):
            if st.finished:
                continue
            try:
                s = os.stat(name)
            except FileNotFoundError:  # removed (or renamed away) before it was complete
                del self.files[name]
                continue
            except OSError:
                continue
            if (s.st_size, s.st_mtime_ns) != (st.size, st.mtime):
                st.size, st.mtime, st.changed = s.st_size, s.st_mtime_ns, now
            n += self._check_one(name, st, now)
        if n:
            self.last_frame = now
        return n

    def _check_one(self, name: str, st: _File, now: float) -> int:
        stable = now - st.changed
        try:
            with open(name, "rb") as fh:
                head = fh.read(16)
                if head.lstrip().startswith(b"###CBF"):
                    fh.seek(0)
                    if not cbf_complete(fh.read()):
                        return self._give_up(name, st, stable, None)
                    return self._hand_over(name, st, single=True)
        except OSError as exc:
            return self._give_up(name, st, stable, exc)
        hdf5 = head.startswith(_HDF5_SIGNATURE)
        if stable < self.settle:  # still changing: only an HDF5 file written under SWMR has whole frames now
            return self._hand_over(name, st, single=False, growing=True) if hdf5 else 0
        return self._hand_over(name, st, single=not hdf5)

    def _hand_over(self, name: str, st: _File, *, single: bool, growing: bool = False) -> int:
        """Offer the file's whole frames not yet offered (opening it for its length); ``growing``: only if its
        writer writes it under SWMR (else nothing, and no error: it is still being written)."""
        try:
            with open_source(name) as src:
                n_frames, being_written = src.complete_frames, src.being_written
        except Exception as exc:  # noqa: BLE001 - not readable yet: retried until it gives up
            return 0 if growing else self._give_up(name, st, time.monotonic() - st.changed, exc)
        if growing and not being_written:
            return 0
        st.locked = False
        done = self.loop.done_frames(name)
        offered = 0
        for i in range(st.offered, n_frames):
            if i not in done:
                self.loop.offer(FileItem(name, i), block=True)
                offered += 1
        st.offered = max(st.offered, n_frames)
        if (single or n_frames == 0) and not being_written:
            st.finished = True
            if n_frames == 0:
                self.loop.offer(ErrorItem(name, -1, "the file holds no frames"), block=True)
                offered += 1
        return offered

    def _give_up(self, name: str, st: _File, stable: float, exc) -> int:
        """A file that is not complete or readable: wait, unless it stayed so for ``give_up`` seconds."""
        text = "" if exc is None else problem_of(exc)
        st.locked = "lock" in text.lower()  # HDF5 file locking: its writer still has it open
        if st.locked or stable < self.give_up or st.offered:
            return 0
        st.finished = True
        why = text or "the file stayed incomplete (its binary section never became whole)"
        self.loop.offer(ErrorItem(name, -1, f"given up after {self.give_up:g} s unchanged: {why}"), block=True)
        return 1


def watch(directory, out, *, pattern: str = "*", idle: float | None = None, poll: bool = False,
          settle: float = 1.0, give_up: float = 30.0, status=None, should_stop=None, **loop_options) -> LiveSummary:
    """Screen the files a detector writes into ``directory`` until Ctrl-C or ``idle`` seconds without new frames.

    Parameters
    ----------
    directory : str or Path
        The folder to follow (sub-folders too).
    out : str or Path
        Output folder (see :mod:`diffscreen.live.loop`); started again on the same ``out``, it resumes.
    pattern : str
        Glob on the file name or the path relative to ``directory``, e.g. ``"*.cbf"``.
    idle : float, optional
        Stop after this many seconds without a new frame and without a file changing.
    poll : bool
        Poll the folder (for network file systems) instead of file-system events.
    settle, give_up : float
        See :class:`FolderWatcher`.
    status : callable, optional
        ``status(text)`` for one-line news.
    should_stop : callable, optional
        Checked about every 0.2 s; True stops (as Ctrl-C does).
    **loop_options
        :class:`~diffscreen.live.loop.LiveLoop` options.

    Returns
    -------
    LiveSummary

    Raises
    ------
    ConfigError
        ``directory`` is not a folder; bad loop options.
    OutputError, ModelFileError
        As :class:`~diffscreen.live.loop.LiveLoop`.
    """
    import threading

    import watchfiles

    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"{directory}: not a folder to watch")
    loop = LiveLoop(out, source=str(directory), **loop_options)
    loop.start()
    stop = threading.Event()
    try:
        w = FolderWatcher(directory, loop, pattern=pattern, settle=settle, give_up=give_up)
        w.scan()
        w.check()
        last_change = time.monotonic()
        events = watchfiles.watch(directory, watch_filter=None, stop_event=stop, yield_on_timeout=True,
                                  rust_timeout=200, debounce=100, step=20, force_polling=poll or None,
                                  poll_delay_ms=250, raise_interrupt=True)
        rescanned = False
        for changes in events:
            now = time.monotonic()
            if not rescanned:  # the watcher runs from its first yield on: what was made before it started is
                w.scan()       # seen by this second scan (the first ran before it), or never
                rescanned = True
            for change, path in changes:
                if change != watchfiles.Change.deleted:
                    w.touch(path)
                    last_change = now
            if poll and not changes:
                w.scan()  # the polling fallback may miss a file replaced within one poll
            if w.check() and status:
                status(f"{loop.counts()['frames_received']} frames received, {loop.buffered} waiting")
            if loop.failure is not None or (should_stop is not None and should_stop()):
                break
            if idle is not None and now - max(w.last_frame, last_change) >= idle and not loop.buffered:
                if status:
                    status(f"no new frames for {idle:g} s: stopping")
                break
    except KeyboardInterrupt:
        if status:
            status("interrupted: screening what was received, then stopping")
    except BaseException:
        stop.set()
        loop.close(drain=False)
        raise
    stop.set()
    return loop.close()
