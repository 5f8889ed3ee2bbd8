"""The live screening loop: frames in as they arrive, decisions out in whole chunks while the run goes on.

A *frame source* (:mod:`diffscreen.live.watch`, :mod:`diffscreen.live.stream`,
or any code) hands frames to :meth:`LiveLoop.offer` as they arrive: a
:class:`FileItem` (frame ``index`` of a file on disk) or a
:class:`StreamItem` (a frame held in memory, decoded when the loop gets to
it).  ``offer`` never blocks a stream: the loop buffers up to ``max_buffer``
frames and counts what comes beyond as dropped.  One worker thread takes
batches from the buffer, decides with the same method objects ``diffscreen
screen`` uses (:class:`~diffscreen.screen.method.CNNMethod` with the bundled
default model unless told otherwise) and, every ``chunk_seconds``, commits a
chunk:

``OUT/hits/hits_NNNNNN.cxi``
    the chunk's kept frames (raw pixels, masks, geometry, probabilities; the
    CXI layout of :class:`~diffscreen.io.cxi.CXIWriter`), written to a
    temporary name and renamed;
``OUT/hits.lst``
    grows by the kept frames: ``file //frame`` of the file on disk (watch),
    or ``OUT/hits/hits_NNNNNN.cxi //k`` (a stream: the frames exist nowhere
    else), so CrystFEL's indexamajig can start on the first hits;
``OUT/errors.csv``, ``OUT/scores.csv``
    grow by the chunk's rows: exactly the rows and cells ``diffscreen
    screen`` writes for the same frames (:class:`~diffscreen.screen.outputs.HitOutputs`);
``OUT/summary.json``
    frames received, screened, dropped and failed (received = screened +
    dropped + failed), labels, hit rate, frames/s, latency;
``OUT/.live/state.json``
    the committed length of each file and the counters (for the resume).

Each text file grows atomically: the old content and the chunk's rows go to a
temporary file that is renamed over it (a reader sees the file before or
after the chunk, never half of it; the copy costs about 1 ms per MB).
``scores.csv`` is the record of what was screened: a loop started again on
the same ``OUT`` reads it and skips every (file, frame) already there, and
cuts any file longer than ``state.json`` says back to its committed length
(a chunk killed half-way is screened again, once).

Latency is measured from :meth:`LiveLoop.offer` to the rename of
scores.csv that holds the frame's row.
"""

from __future__ import annotations

import csv
import io as _io
import json
import shutil
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from diffscreen.errors import ConfigError, OutputError
from diffscreen.io.atomic import atomic_write_text, temporary_path
from diffscreen.io.cxi import CXIWriter
from diffscreen.io.frame import check_frame
from diffscreen.io.outdir import OutputLock, output_error, remove_stale_parts
from diffscreen.screen import list_entry
from diffscreen.screen.runner import notify, strict_json
from diffscreen.screen.method import CNNMethod, as_method, decision_problem, problem_of
from diffscreen.live.workers import (MemorySource, OpenFile, WorkerPool, classify_spec, classify_stream,
                                    decoded_frame)

__all__ = ["FileItem", "StreamItem", "ErrorItem", "MemorySource", "LiveLoop", "LiveSummary", "SCORES", "STATE"]

SCORES, HITS_LST, ERRORS = "scores.csv", "hits.lst", "errors.csv"
STATE = ".live/state.json"
_WARNING = "warning: "


@dataclass
class FileItem:
    """Frame ``index`` of a file on disk (``name`` as scores.csv names it; any reader opens it)."""

    name: str
    index: int
    t: float = 0.0


@dataclass
class StreamItem:
    """A frame in memory: ``frame`` has ``name``, ``index`` and ``decode() -> (raw, bad, meta)``
    (e.g. :class:`~diffscreen.io.simplon.StreamFrame`); ``nbytes`` is what it holds."""

    frame: object
    t: float = 0.0

    @property
    def name(self) -> str:
        return self.frame.name

    @property
    def index(self) -> int:
        return self.frame.index


@dataclass
class ErrorItem:
    """A file or frame the source could not hand over (e.g. a file that never became readable): an error row."""

    name: str
    index: int
    message: str
    t: float = 0.0


@dataclass
class LiveSummary:
    """Counts of a live run (all invocations on the same ``OUT`` together, unless said otherwise).

    Attributes
    ----------
    frames_received : int
        Frames offered that were not screened before (= screened + dropped + failed once the loop has stopped).
    frames_screened : int
        Classified (hit, maybe or miss).
    frames_dropped : int
        Arrived while the buffer held ``max_buffer`` frames: never screened.
    frames_failed : int
        Could not be read or classified (error rows; a whole file that failed counts once).
    frames_already_done : int
        Offered again after they were screened (e.g. a stream replayed into the same OUT): skipped.
    n_hit, n_maybe, n_miss, n_warning : int
    hit_rate : float
        Kept (hit + maybe) / screened.
    frames_per_s : float
        This invocation: frames screened per second of worker time.
    latency_p50_s, latency_p99_s : float
        This invocation: from arrival to the decision on disk, seconds.
    chunks : int
    seconds : float
        This invocation's wall time.
    out_dir, model, source : str
    """

    frames_received: int = 0
    frames_screened: int = 0
    frames_dropped: int = 0
    frames_failed: int = 0
    frames_already_done: int = 0
    n_hit: int = 0
    n_maybe: int = 0
    n_miss: int = 0
    n_warning: int = 0
    hit_rate: float = float("nan")
    frames_per_s: float = float("nan")
    latency_p50_s: float = float("nan")
    latency_p99_s: float = float("nan")
    chunks: int = 0
    seconds: float = 0.0
    out_dir: str = ""
    model: str = ""
    source: str = ""
    max_buffer: int = 0
    errors: list = field(default_factory=list)

    @property
    def n_error(self) -> int:
        return self.frames_failed

    def text(self) -> str:
        """Human-readable summary lines."""
        return (f"received: {self.frames_received}  screened: {self.frames_screened}  dropped: {self.frames_dropped}"
                f"  failed: {self.frames_failed}" + (f"  already screened: {self.frames_already_done}"
                                                      if self.frames_already_done else "") + "\n"
                f"hits: {self.n_hit}  maybe: {self.n_maybe}  miss: {self.n_miss}  hit rate (hit + maybe): "
                f"{100 * self.hit_rate:.1f}%\n"
                f"speed: {self.frames_per_s:.1f} frames/s  latency p50 {self.latency_p50_s:.2f} s, p99 "
                f"{self.latency_p99_s:.2f} s  ({self.seconds:.1f} s, {self.chunks} chunks)")


_COUNTERS = ("frames_received", "frames_screened", "frames_dropped", "frames_failed", "frames_already_done",
             "n_hit", "n_maybe", "n_miss", "n_warning", "chunks")


class _Chunk:
    """Rows of the chunk being filled, and its hits file (opened at its first kept frame)."""

    def __init__(self, number: int):
        self.number = number
        self.scores: list = []
        self.errors: list = []
        self.lst: list[str] = []
        self.times: list[float] = []
        self.writer: CXIWriter | None = None
        self.kept = 0
        self.t0 = None


class LiveLoop:
    """Classify frames as they arrive and grow the screening outputs in whole chunks.

    Parameters
    ----------
    out_dir : str or Path
        Output folder (created; locked while the loop runs, as ``screen`` locks it).
    model : str, Path, Classifier or None
        A model file or a bundled model name (``"default"``, ``"fast"``);
        None: the bundled default.  Ignored when ``method`` is given.
    method : screening method, optional
        Decides instead of ``model`` (anything :func:`~diffscreen.screen.method.as_method`
        takes); its outputs must list hits (a hit/maybe/miss method).
    batch_size : int
        Most frames per forward pass (a batch holds frames of one file, or of one stream).
    workers : int
        Processes that classify: 1 (default) classifies in the loop's own
        thread; N > 1 starts N worker processes
        (:class:`~diffscreen.live.workers.WorkerPool`, each with its share
        of the cores' threads), up to 2 N batches in flight.  The rows are
        written in arrival order either way, so the outputs do not depend on it.
    max_buffer : int
        Most frames waiting to be classified; a stream's frame arriving
        beyond it is dropped and counted.
    chunk_seconds : float
        Outputs are committed at least this often while frames come.
    write_cxi : bool
        Write the kept frames' pixels to ``OUT/hits/hits_NNNNNN.cxi``.
    observer : object, optional
        Told of every decision from the worker thread: ``frame(frame_id, keep,
        label, scores, image)`` (``scores`` a dict column -> value, ``image``
        the float32 pixels of a kept frame, else None), ``error(frame_id,
        message)``, ``dropped(n)`` (frames dropped since the last call) and
        ``rate(frames_per_s)`` (once per chunk).  Missing methods are skipped;
        an exception inside one is ignored.
    publish : str, optional
        ZeroMQ PUB endpoint (``tcp://*:PORT``) on which each decision is sent
        as one JSON message: ``{"frame_id", "file", "frame", "keep", "label",
        "scores"}`` (``label`` ``"error"`` and ``"error"`` text for a failed frame).
    source : str
        What the frames come from (summary.json).
    fresh : bool
        Start over: remove this loop's earlier outputs in ``OUT`` first.

    Raises
    ------
    ConfigError
        Bad sizes, a method that does not list hits, or ``OUT`` holding a
        ``screen`` run's outputs (use another folder or ``fresh``).
    OutputError
        ``OUT`` is locked by another run, or cannot be written.
    ModelFileError
        The model cannot be loaded.
    """

    def __init__(self, out_dir, *, model=None, method=None, batch_size: int = 16, workers: int = 1,
                 max_buffer: int = 256,
                 chunk_seconds: float = 1.0, write_cxi: bool = True, observer=None, publish: str | None = None,
                 source: str = "", fresh: bool = False):
        if batch_size < 1 or workers < 1 or max_buffer < 1 or not chunk_seconds > 0:
            raise ConfigError("batch_size, workers and max_buffer must be >= 1 and chunk_seconds > 0")
        self.workers = int(workers)
        self._pool: WorkerPool | None = None
        self.out = Path(out_dir)
        self.batch_size, self.max_buffer, self.chunk_seconds = int(batch_size), int(max_buffer), float(chunk_seconds)
        self.write_cxi, self.observer, self.source, self.fresh = write_cxi, observer, source, fresh
        if method is None:
            from diffscreen.models.inference import Classifier

            method = CNNMethod(model if isinstance(model, Classifier) else Classifier(model))
        self.method = as_method(method)
        if not getattr(self.method.outputs, "lists_hits", False):
            raise ConfigError("live screening needs a hit/maybe/miss method (a CDI model is screened with "
                              "`diffscreen screen --task cdi`)")
        self.outputs = self.method.outputs
        self._publish_to = publish
        self._pub = None
        self._lock = OutputLock(self.out)
        self._cv = threading.Condition()
        self._buf: deque = deque()
        self._stop = False
        self._abort = False
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._done: set = set()
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._dropped_unreported = 0
        self._latencies: list[float] = []
        self._t_work = 0.0
        self._n_now = 0
        self._sizes = {SCORES: 0, HITS_LST: 0, ERRORS: 0}
        self._t0 = time.time()
        self._last_commit = time.perf_counter()
        self._errors_tail: deque = deque(maxlen=100)
        self._files = OpenFile()

    # ------------------------------------------------------------------ lifetime

    def start(self) -> "LiveLoop":
        """Take the output folder, resume from what it holds, and start the worker thread.

        Raises
        ------
        OutputError, ConfigError
            As the class says.
        """
        self._lock.acquire()
        try:
            remove_stale_parts(self.out)
            remove_stale_parts(self.out / "hits")
            self._resume()
            if self._publish_to:
                import zmq

                self._pub = zmq.Context.instance().socket(zmq.PUB)
                self._pub.setsockopt(zmq.LINGER, 0)
                try:
                    self._pub.bind(self._publish_to)
                except zmq.ZMQError as exc:
                    raise ConfigError(f"--publish {self._publish_to}: cannot bind ({exc})") from None
            if self.workers > 1:
                self._pool = WorkerPool(self.method, self.workers)
        except BaseException:
            self._lock.release()
            raise
        self._thread = threading.Thread(target=self._work, name="diffscreen-live", daemon=True)
        self._thread.start()
        return self

    def close(self, *, drain: bool = True) -> LiveSummary:
        """Stop: screen what the buffer holds (``drain``) or drop it, commit the last chunk, write summary.json.

        Returns
        -------
        LiveSummary

        Raises
        ------
        OutputError
            The outputs could not be written (the committed chunks stay).
        """
        with self._cv:
            self._stop = True
            if not drain:
                self._abort = True
                n = len(self._buf)
                self._buf.clear()
                self._counts["frames_dropped"] += n
                self._dropped_unreported += n
            self._cv.notify_all()
        try:
            if self._thread is not None:
                while self._thread.is_alive():
                    self._thread.join(0.2)
            if self._failure is not None:
                raise self._failure
            return self._write_summary()
        finally:
            if self._pub is not None:
                self._pub.close(linger=0)
                self._pub = None
            self._lock.release()

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        self.close(drain=exc_type is None or issubclass(exc_type, KeyboardInterrupt))
        return False

    # ------------------------------------------------------------------ the sources' side

    def done(self, name: str, index: int) -> bool:
        """Whether frame ``index`` of ``name`` was screened already (``index`` -1: the whole file failed)."""
        with self._cv:
            return (name, index) in self._done

    def done_frames(self, name: str) -> set:
        """The frame indices of ``name`` screened already (-1 when the whole file failed)."""
        with self._cv:
            return {i for n, i in self._done if n == name}

    def offer(self, item, *, block: bool = False) -> bool:
        """Hand one arrived frame to the loop.

        Parameters
        ----------
        item : FileItem, StreamItem or ErrorItem
        block : bool
            Wait while the buffer is full (a file on disk can wait); False
            (a stream): drop the frame when the buffer is full.

        Returns
        -------
        bool
            True if buffered; False if it was screened before (skipped) or dropped.

        Raises
        ------
        OutputError
            The worker stopped because the outputs cannot be written.
        """
        item.t = time.perf_counter()
        key = (item.name, item.index)
        with self._cv:
            if self._failure is not None:
                raise self._failure
            if key in self._done:
                self._counts["frames_already_done"] += 1
                return False
            self._counts["frames_received"] += 1
            while block and len(self._buf) >= self.max_buffer and self._failure is None and not self._stop:
                self._cv.wait(0.1)
            if len(self._buf) >= self.max_buffer:
                self._counts["frames_dropped"] += 1
                self._dropped_unreported += 1
                return False
            self._done.add(key)  # in flight: never offered twice
            self._buf.append(item)
            self._cv.notify_all()
            return True

    @property
    def buffered(self) -> int:
        """Frames waiting in the buffer now."""
        with self._cv:
            return len(self._buf)

    def counts(self) -> dict:
        """A copy of the run's counters (:class:`LiveSummary` field names)."""
        with self._cv:
            return dict(self._counts)

    @property
    def failure(self) -> BaseException | None:
        """The error that stopped the worker (outputs could not be written), or None."""
        return self._failure

    # ------------------------------------------------------------------ resume

    def _resume(self) -> None:
        state_path = self.out / STATE
        state = _read_json(state_path)
        ours = [self.out / n for n in (SCORES, HITS_LST, ERRORS, "summary.json")]
        if self.fresh:
            for p in ours:
                p.unlink(missing_ok=True)
            shutil.rmtree(self.out / "hits", ignore_errors=True)
            shutil.rmtree(self.out / ".live", ignore_errors=True)
            state = None
        elif state is None and any(p.exists() for p in ours[:3]):
            raise ConfigError(f"{self.out} holds the outputs of another run (a `diffscreen screen`?); "
                              "choose another --out, or --fresh to replace them")
        self.out.mkdir(parents=True, exist_ok=True)
        if state is None:
            return
        for k in _COUNTERS:
            self._counts[k] = int(state.get("counts", {}).get(k, 0))
        sizes = state.get("sizes", {})
        for name in self._sizes:
            want = int(sizes.get(name, 0))
            _cut(self.out / name, want)  # a chunk killed between renames: back to the last whole chunk
            self._sizes[name] = want
        chunks = self._counts["chunks"]
        for p in (self.out / "hits").glob("hits_*.cxi"):
            try:
                if int(p.stem.split("_")[1]) > chunks:
                    p.unlink()
            except (ValueError, IndexError):
                continue
        self._done = _screened(self.out / SCORES)

    # ------------------------------------------------------------------ the worker

    def _take(self, timeout: float) -> list:
        """The next batch: up to ``batch_size`` waiting frames, with worker processes at most an even share of
        the waiting frames (a backlog is spread over the workers, not queued behind one)."""
        with self._cv:
            if not self._buf and not self._stop:
                self._cv.wait(timeout)
            size = self.batch_size if self._pool is None else min(self.batch_size,
                                                                   -(-len(self._buf) // self.workers))
            batch = []
            while self._buf and len(batch) < size:
                batch.append(self._buf.popleft())
            if batch:
                self._cv.notify_all()
            return batch

    def _work(self) -> None:
        chunk = _Chunk(self._counts["chunks"] + 1)
        pending: deque = deque()  # (batch, parts) in arrival order; parts hold results or futures
        busy_since = None
        try:
            while True:
                while len(pending) < (2 * self.workers if self._pool else 1):
                    wait = self.chunk_seconds if chunk.t0 is None else max(0.0, chunk.t0 + self.chunk_seconds
                                                                           - time.perf_counter())
                    batch = self._take(0.0 if pending else min(wait, 0.25))
                    if not batch:
                        break
                    now = time.perf_counter()
                    chunk.t0 = now if chunk.t0 is None else chunk.t0
                    busy_since = now if busy_since is None else busy_since
                    pending.append((batch, self._submit(batch)))
                if pending and _ready(pending[0][1], timeout=0.05):
                    batch, parts = pending.popleft()
                    chunk.t0 = time.perf_counter() if chunk.t0 is None else chunk.t0  # taken before the last commit
                    self._finish(parts, chunk)
                    if not pending:
                        self._t_work += time.perf_counter() - busy_since
                        busy_since = None
                self._report_drops()
                with self._cv:
                    stopping, empty, abort = self._stop, not self._buf and not pending, self._abort
                if chunk.times and (time.perf_counter() - chunk.t0 >= self.chunk_seconds or (stopping and empty)):
                    if abort:
                        break
                    self._commit(chunk)
                    chunk = _Chunk(chunk.number + 1)
                if stopping and empty and not chunk.times:
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the source's thread (offer, close)
            if chunk.writer is not None:
                chunk.writer.abort()
            self._failure = exc if not isinstance(exc, OSError) or isinstance(exc, OutputError) else \
                output_error(exc, self.out)
            with self._cv:
                self._cv.notify_all()
        finally:
            if self._pool is not None:
                self._pool.close()
            self._files.close()
        if self._abort and chunk.writer is not None:
            chunk.writer.abort()

    def _report_drops(self) -> None:
        with self._cv:
            n, self._dropped_unreported = self._dropped_unreported, 0
        if n:
            notify(self.observer, "dropped", n)

    def _submit(self, batch: list) -> list:
        """Start classifying one batch, split into runs of one file's or one stream's frames.

        Returns
        -------
        list of (items, results, read_whole)
            ``results``: one FrameDecision or problem (str) per item, or a
            :class:`~concurrent.futures.Future` of them (worker processes);
            ``read_whole(item)`` gives a kept frame's whole checked Frame.
        """
        parts, k = [], 0
        while k < len(batch):
            item = batch[k]
            j = k + 1
            if not isinstance(item, ErrorItem):
                while j < len(batch) and type(batch[j]) is type(item) and batch[j].name == item.name:
                    j += 1
            group = batch[k:j]
            if isinstance(item, ErrorItem):
                parts.append((group, [item.message], None))
            elif isinstance(item, FileItem):
                indices = [it.index for it in group]
                parts.append((group, self._pool.file(item.name, indices) if self._pool else
                              classify_spec(self.method, self._files, item.name, indices), self._read_file))
            else:
                frames = [it.frame for it in group]
                parts.append((group, self._pool.stream(frames) if self._pool else classify_stream(self.method, frames),
                              lambda it: decoded_frame(it.frame)))
            k = j
        return parts

    def _read_file(self, item: FileItem):
        return check_frame(self._files.get(item.name, item.index).read(item.index))

    def _finish(self, parts: list, chunk: _Chunk) -> None:
        """Add the rows of one classified batch to ``chunk``, in arrival order."""
        for group, results, read_whole in parts:
            if not isinstance(results, list):
                try:
                    results = results.result()
                except Exception as exc:  # noqa: BLE001 - a worker process died or its batch did not pickle
                    results = [problem_of(exc)] * len(group)
            for it, d in zip(group, results):
                self._decided(chunk, it, d, read_whole)

    def _decided(self, chunk, item, d, read_whole) -> None:
        """Add one frame's row: its decision, or its problem; a kept frame goes to the chunk's hits file."""
        why = decision_problem(d)
        image = None
        if why is None and d.keep:
            try:
                fr = d.frame if d.frame is not None else read_whole(item)  # the method's, unless it left none
                d.frame = None
            except Exception as exc:  # noqa: BLE001 - the frame cannot be read again
                why = problem_of(exc)
            else:
                image = fr.data
                entry = (list_entry(item.name, item.index, _single_frame(self._files.get(item.name, item.index)))
                         if isinstance(item, FileItem) else None)
                self._files.release()
                if self.write_cxi:
                    if chunk.writer is None:
                        chunk.writer = CXIWriter(self._hits_path(chunk), mask_mode="per_frame",
                                                 class_names=self.method.class_names)
                    chunk.writer.append(fr.data, fr.meta, mask=fr.mask, label=d.label,
                                        probabilities=d.probabilities, peaks=d.peaks)
                    if entry is None:
                        entry = f"{self._hits_path(chunk)} //{chunk.kept}"
                if entry is not None:
                    chunk.lst.append(entry)
                chunk.kept += 1
        self._row(chunk, item, d if why is None else None, why, image)

    def _hits_path(self, chunk) -> Path:
        return self.out / "hits" / f"hits_{chunk.number:06d}.cxi"

    def _row(self, chunk, item, d, why, image) -> None:
        frame_id = f"{item.name} //{item.index}"
        chunk.times.append(item.t)
        if why is not None:
            cells = self.outputs.error_cells()
            chunk.scores.append([item.name, item.index, *cells])
            chunk.errors.append([item.name, item.index, why])
            self._counts_add("frames_failed")
            self._errors_tail.append((item.name, item.index, why))
            notify(self.observer, "error", frame_id, why)
            self._send({"frame_id": frame_id, "file": item.name, "frame": item.index, "keep": False,
                        "label": "error", "error": why})
            return
        cells = self.outputs.cells(d)
        chunk.scores.append([item.name, item.index, *cells])
        chunk.errors.extend([item.name, item.index, f"{_WARNING}{w}"] for w in d.warnings)
        self._counts_add("frames_screened")
        if d.warnings:
            self._counts_add("n_warning", len(d.warnings))
        if f"n_{d.label}" in self._counts:
            self._counts_add(f"n_{d.label}")
        scores = {c: float(v) for c, v in zip(self.method.score_columns, d.scores)}
        notify(self.observer, "frame", frame_id, bool(d.keep), d.label, scores, image if d.keep else None)
        self._send({"frame_id": frame_id, "file": item.name, "frame": item.index, "keep": bool(d.keep),
                    "label": d.label, "scores": scores})

    def _counts_add(self, key: str, n: int = 1) -> None:
        with self._cv:
            self._counts[key] += n

    def _send(self, record: dict) -> None:
        if self._pub is not None:
            import zmq

            try:
                self._pub.send_string(json.dumps(record), flags=zmq.NOBLOCK)
            except zmq.ZMQError:  # a PUB socket drops for slow subscribers; never wait for one
                pass

    # ------------------------------------------------------------------ commit

    def _commit(self, chunk: _Chunk) -> None:
        """Write one chunk: its hits file, then hits.lst, errors.csv, scores.csv (each renamed whole), then the state."""
        lt = self.outputs.lineterminator
        try:
            if chunk.writer is not None:
                chunk.writer.close()
                chunk.writer = None
            texts = {
                HITS_LST: "".join(line + "\n" for line in chunk.lst),
                ERRORS: _csv_text(chunk.errors, lt, ("file", "frame", "error") if not self._sizes[ERRORS] else None),
                SCORES: _csv_text(chunk.scores, lt, ("file", "frame", *self.outputs.columns)
                                  if not self._sizes[SCORES] else None),
            }
            for name, text in texts.items():  # scores.csv last: the record of what was screened
                if text or not (self.out / name).exists():
                    self._sizes[name] = _append(self.out / name, text.encode(), self._sizes[name])
            now = time.perf_counter()
            self._latencies.extend(now - t for t in chunk.times)
            n = len(chunk.times)
            self._n_now += n
            with self._cv:
                self._counts["chunks"] = chunk.number
            self._save_state()
            self._write_summary()
        except OSError as exc:
            if chunk.writer is not None:
                chunk.writer.abort()
            raise output_error(exc, self.out) from None
        dt = now - self._last_commit
        self._last_commit = now
        if dt > 0:
            notify(self.observer, "rate", n / dt)

    def _save_state(self) -> None:
        state = {"counts": self.counts(), "sizes": dict(self._sizes), "model": self.method.identity}
        (self.out / ".live").mkdir(exist_ok=True)
        atomic_write_text(self.out / STATE, json.dumps(state))

    def summary(self) -> LiveSummary:
        """The run's :class:`LiveSummary` now."""
        c = self.counts()
        s = LiveSummary(**{k: c[k] for k in _COUNTERS})
        kept = s.n_hit + s.n_maybe
        s.hit_rate = kept / s.frames_screened if s.frames_screened else float("nan")
        s.frames_per_s = self._n_now / self._t_work if self._t_work > 0 and self._n_now else float("nan")
        if self._latencies:
            s.latency_p50_s, s.latency_p99_s = (float(v) for v in np.percentile(self._latencies, [50, 99]))
        s.seconds = time.time() - self._t0
        s.out_dir, s.source, s.max_buffer = str(self.out), self.source, self.max_buffer
        s.model = str(getattr(self.method, "path", None) or self.method.identity)
        s.errors = list(self._errors_tail)
        return s

    def _write_summary(self) -> LiveSummary:
        s = self.summary()
        record = asdict(s)
        record["errors"] = [{"file": f, "frame": i, "error": e} for f, i, e in s.errors]
        record["note"] = "received = screened + dropped + failed; errors: the latest 100 (all in errors.csv)"
        atomic_write_text(self.out / "summary.json", strict_json(record))
        return s


# --------------------------------------------------------------------------- helpers


def _single_frame(src) -> bool:
    """Whether a file holds one frame for good (CrystFEL lists it without ``//frame``); not while it grows."""
    return len(src) == 1 and not src.being_written


def _csv_text(rows, lineterminator: str, header=None) -> str:
    if not rows and header is None:
        return ""
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator=lineterminator)
    if header is not None:
        w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _append(path: Path, data: bytes, committed: int) -> int:
    """``path``'s first ``committed`` bytes and ``data``, through a temporary file renamed over it; the new length."""
    with temporary_path(path) as tmp:
        with open(tmp, "wb") as out:
            if committed and path.exists():
                with open(path, "rb") as old:
                    _copy_prefix(old, out, committed)
            out.write(data)
    return committed + len(data)


def _copy_prefix(src, dst, n: int) -> None:
    left = n
    while left > 0:
        block = src.read(min(left, 1 << 22))
        if not block:
            break
        dst.write(block)
        left -= len(block)


def _cut(path: Path, n: int) -> None:
    """Cut ``path`` back to its first ``n`` bytes (write and rename) when it is longer."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size > n:
        _append(path, b"", n)


def _screened(scores: Path) -> set:
    """The (file, frame) pairs of a scores.csv."""
    done = set()
    try:
        with open(scores, newline="") as fh:
            r = csv.reader(fh)
            next(r, None)
            for row in r:
                if len(row) >= 2:
                    try:
                        done.add((row[0], int(row[1])))
                    except ValueError:
                        continue
    except FileNotFoundError:
        pass
    return done


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _ready(parts: list, timeout: float) -> bool:
    """Whether every result of a submitted batch is in, waiting up to ``timeout`` s for the first pending one."""
    for _, results, _ in parts:
        if not isinstance(results, list) and not results.done():
            try:
                results.exception(timeout=timeout)
            except TimeoutError:
                return False
            timeout = 0.0
            if not results.done():
                return False
    return True
