"""Classifying a batch of arrived frames, in the live loop's thread or in worker processes.

The live loop (:class:`diffscreen.live.loop.LiveLoop`) keeps the frames'
arrival, the outputs and the commits in one process; only the classification
of a batch (reading or decoding its frames, preprocessing, the network, the
per-frame numbers of kept frames) moves to worker processes when
``workers > 1``, as OnDA Monitor (Mariani et al. 2016, J. Appl. Cryst. 49,
1073, §2) separates data retrieval and processing from their
parallelisation.  Each process holds the screening method once (sent
pickled when the pool starts) and gets a batch as a small message:

* frames of a file on disk: the file's name and the frame indices (the
  worker opens the file itself and keeps it open for the next batch);
* frames of a stream: the messages as received (still compressed), decoded
  in the worker.

Both paths return one entry per frame, in order: a
:class:`~diffscreen.screen.method.FrameDecision`, or the problem (str) of a
frame that could not be read, decoded or classified.  The loop writes the
rows in arrival order whichever process classified them, so scores.csv is
the same for any number of workers.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import time
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np

from diffscreen.errors import ConfigError, FrameReadError
from diffscreen.io import open_source
from diffscreen.io.base import BaseSource
from diffscreen.io.frame import Frame, check_frame
from diffscreen.screen.method import problem_of
from diffscreen.screen.parallel import limit_threads

__all__ = ["MemorySource", "OpenFile", "classify_spec", "classify_file", "classify_stream", "decoded_frame",
           "WorkerPool", "worker_threads"]


class MemorySource(BaseSource):
    """Frames held in memory as a :class:`~diffscreen.io.base.FrameSource` with the window path.

    Parameters
    ----------
    frames : list of (raw, bad, meta)
        ``raw`` (H, W) pixels in their stored dtype, ``bad`` (H, W) bool
        (True = bad), ``meta`` a :class:`~diffscreen.io.frame.FrameMeta`.
    name : str

    Notes
    -----
    :meth:`read_region` hands out the stored pixels unconverted, as
    :class:`~diffscreen.io.hdf5.CXISource` does, so the fast screening path
    (:func:`diffscreen.screen.pipeline.predict_source`) treats a streamed
    frame exactly as the same frame read from a CXI file.
    """

    reads_window = True

    def __init__(self, frames, name: str = "memory"):
        self._frames = list(frames)
        self.path = name

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self._frames[0][0].shape) if self._frames else (0, 0)

    def _read(self, index: int) -> Frame:
        raw, bad, meta = self._frames[index]
        return Frame(np.asarray(raw, dtype=np.float32), bad, meta)

    def read_meta(self, index: int):
        return self._frames[self._check_index(index)][2]

    def frame_shape(self, index: int) -> tuple[int, int]:
        return tuple(self._frames[self._check_index(index)][0].shape)

    def read_region(self, index: int, rows, cols):
        raw, bad, _ = self._frames[self._check_index(index)]
        (r0, r1), (c0, c1) = (int(rows[0]), int(rows[1])), (int(cols[0]), int(cols[1]))
        H, W = raw.shape
        if not (0 <= r0 <= r1 <= H and 0 <= c0 <= c1 <= W):
            raise FrameReadError(f"window rows {r0}:{r1}, columns {c0}:{c1} is not inside the {H}x{W} frame",
                                 path=self.path, frame=index)
        return raw[r0:r1, c0:c1], bad[r0:r1, c0:c1]


class OpenFile:
    """The file last opened, kept open for the next batch (a run's frames arrive file by file)."""

    def __init__(self):
        self.spec, self.src = None, None

    def get(self, spec: str, index: int = 0):
        """The open source of ``spec``, opening it (and closing the previous one) when it is another file, or
        again when frame ``index`` lies beyond it and its writer is still adding frames (HDF5 under SWMR).

        Raises whatever :func:`~diffscreen.io.open_source` raises; nothing is left open then.
        """
        if spec != self.spec or (self.src.being_written and index >= len(self.src)):
            self.close()
            self.src = open_source(spec)
            self.spec = spec
        return self.src

    def release(self) -> None:
        """Close the file if its writer is still adding frames, so that the next :meth:`get` sees them (an HDF5
        file open in this process is shared by every later open of it, with what it showed then)."""
        if self.src is not None and self.src.being_written:
            self.close()

    def close(self) -> None:
        if self.src is not None:
            self.src.close()
        self.spec, self.src = None, None


def classify_spec(method, files: OpenFile, spec: str, indices) -> list:
    """Decisions for frames ``indices`` of the file ``spec`` (opened through ``files``); a file that does not
    open is one problem (str) per frame."""
    try:
        src = files.get(spec, max(indices, default=0))
    except Exception as exc:  # noqa: BLE001 - the firewall: an unreadable file is its error rows
        return [problem_of(exc)] * len(indices)
    try:
        return classify_file(method, src, indices)
    finally:
        files.release()


def classify_file(method, src, indices) -> list:
    """Decisions for frames ``indices`` of an open source: one FrameDecision or problem (str) each, in order."""
    try:
        return list(method.classify_source(src, list(indices)))
    except Exception as exc:  # noqa: BLE001 - the batch's forward pass failed: each frame is an error
        return [problem_of(exc)] * len(indices)


def classify_stream(method, frames) -> list:
    """Decode stream messages and classify them: one FrameDecision or problem (str) each, in order.

    Parameters
    ----------
    method : screening method
    frames : list of objects with ``name`` and ``decode() -> (raw, bad, meta)``
        E.g. :class:`~diffscreen.io.simplon.StreamFrame`, all of one stream.
    """
    out: list = [None] * len(frames)
    decoded, pos = [], []
    for k, f in enumerate(frames):
        try:
            decoded.append(f.decode())
            pos.append(k)
        except Exception as exc:  # noqa: BLE001 - one message's failure is its error row
            out[k] = problem_of(exc)
    if decoded:
        src = MemorySource(decoded, frames[pos[0]].name)
        for k, d in zip(pos, classify_file(method, src, range(len(decoded)))):
            out[k] = d
    return out


def decoded_frame(stream_frame) -> Frame:
    """The whole, checked frame of one stream message (a kept frame's pixels for hits.cxi)."""
    return check_frame(MemorySource([stream_frame.decode()], stream_frame.name).read(0))


# --------------------------------------------------------------------------- worker processes

_METHOD = None
_FILES = OpenFile()


def _init(method_bytes: bytes, threads: int) -> None:
    global _METHOD
    limit_threads(threads)
    _METHOD = pickle.loads(method_bytes)


def _file_task(spec: str, indices) -> list:
    return classify_spec(_METHOD, _FILES, spec, indices)


def _stream_task(frames) -> list:
    return classify_stream(_METHOD, frames)


def _ready_task() -> int:
    time.sleep(0.05)  # long enough that the next ready check lands on another process
    return os.getpid()


def worker_threads(workers: int) -> int:
    """Threads for each of ``workers`` processes: this process's torch threads (``--threads``, else PyTorch's
    default, one per core) shared out, at least 1."""
    import torch

    return max(1, torch.get_num_threads() // max(1, workers))


class WorkerPool:
    """``workers`` processes that classify batches with one screening method.

    Parameters
    ----------
    method : screening method
        Pickled once into each process (a :class:`~diffscreen.screen.method.CNNMethod`
        with its network is about 100 kB).
    workers : int
        Processes (at least 2; one worker is the loop's own thread).

    Raises
    ------
    ConfigError
        The method cannot be pickled.
    """

    def __init__(self, method, workers: int):
        try:
            blob = pickle.dumps(method)
        except Exception as exc:  # noqa: BLE001 - a method holding a lock, a socket, ...
            raise ConfigError(f"--workers {workers}: the screening method cannot be sent to worker processes "
                              f"({problem_of(exc)}); use --workers 1") from None
        self.workers = int(workers)
        self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_init, initargs=(blob, worker_threads(self.workers)))
        self._warm_up()

    def _warm_up(self, timeout: float = 120.0) -> None:
        """Start every process and wait until each holds the method, so the first frames do not wait for a
        process to import PyTorch (seconds)."""
        seen: set = set()
        t_end = time.monotonic() + timeout
        while len(seen) < self.workers and time.monotonic() < t_end:
            futures = [self._pool.submit(_ready_task) for _ in range(self.workers)]
            seen.update(f.result(timeout=max(1.0, t_end - time.monotonic())) for f in futures)

    def file(self, spec: str, indices) -> Future:
        """Classify frames ``indices`` of the file ``spec`` (its :func:`~diffscreen.io.open_source` spec)."""
        return self._pool.submit(_file_task, spec, list(indices))

    def stream(self, frames) -> Future:
        """Decode and classify stream messages (see :func:`classify_stream`)."""
        return self._pool.submit(_stream_task, list(frames))

    def close(self) -> None:
        """Stop the processes; batches not started are cancelled."""
        self._pool.shutdown(wait=True, cancel_futures=True)
