"""Screening a run: classify every frame, keep the hits (the main job).

Outputs of a single-label method (hit/maybe/miss CNN, peakfinder8)::

    DIR/scores.csv    file,frame,<scores>,label   (label: a class name, or error)
                      <scores> = p_hit,p_maybe,p_miss for a CNN, n_peaks for peakfinder8
    DIR/hits.lst      kept frames, CrystFEL list: "file //frame"
    DIR/hits.cxi      kept frames' raw pixels, masks and probabilities (CXI layout)
    DIR/errors.csv    file,frame,error for every frame or file that failed
    DIR/summary.json  frames, hits, hit rate, frames/s, model

A multi-label CDI method (:func:`screen_cdi`) writes its own scores.csv
and summary.json and no hits (:class:`~diffscreen.screen.outputs.MultiLabelOutputs`).

Work is done in chunks whose results go to ``DIR/.partial/``; a chunk is
complete once its CSV exists, so an interrupted run resumes where it
stopped.  Final files appear only at the end, each written to a temporary
name and renamed.

The per-frame decision comes from a *screening method*
(:class:`~diffscreen.screen.method.ScreeningMethod`): it gives each frame's
scores, label and whether it is kept, and its ``outputs`` give the
scores.csv cells and the summary; this module never interprets labels.

The walk of one frame (every step calls downward, none climbs back)::

    cli.screen                       the command line -> screen.screen / screen.screen_cdi
    screen.runner.screen             setup: _work_list -> io.open_source (count the frames)
    screen.runner._Chunk.run         per batch of one file's frames (each file opened once per chunk)
      _Chunk._decide                 FrameReader.source -> io.open_source
        screen.method.CNNMethod.classify_source
          screen.pipeline.predict_source
            io FrameSource.read_meta, .frame_shape       (window path)
            preprocess.fast.FastPreprocessor.plan
            io FrameSource.read_region                   (whole-frame path: .read, io.frame.check_frame)
            preprocess FastPreprocessor.from_region / .resample_window + screen.pipeline.check_window
            preprocess FastPreprocessor.normalise_inplace
            models.inference.Classifier.predict_batch    (the network)
          models.decision.decide                         (Ke et al. 2018 §2.1)
        (or screen.method.PerFrame / CDIMethod.classify_source: io .read, io.frame.check_frame,
         the method's own classify / preprocess.cdi.prepare_cdi and network)
      _Chunk._run_file               outputs.cells -> chunk CSV; kept frames: io .read -> io.cxi.CXIWriter.append
                                     (with --geom: io.geom.GeomSource wraps each source; kept frames are
                                      stored as io.geom.GeomSource.read_raw gives them, stacked panels;
                                      with --detector: io.euxfel.EuXFELRuns opens each run directory)
    screen.runner._collect           chunk CSVs -> scores.csv, hits.lst, errors.csv, hits.cxi; outputs tally
    screen.outputs ... .summary      ScreenSummary / CDIScreenSummary -> summary.json
"""

from __future__ import annotations

import csv
import io as _io
import itertools
import json
import math
import shutil
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from diffscreen.errors import ConfigError, DiffscreenError, OutputError
from diffscreen.io import open_source
from diffscreen.io.atomic import atomic_write_text, temporary_path
from diffscreen.io.cxi import CXIWriter, merge_cxi
from diffscreen.io.euxfel import EuXFELRuns
from diffscreen.io.frame import check_frame
from diffscreen.io.geom import GeomSource, as_geometry, open_with_geometry
from diffscreen.io.outdir import OutputLock, output_error, remove_outputs, remove_stale_parts
from diffscreen.models.inference import Classifier
from diffscreen.preprocess.spots import METRIC_COLUMNS
from diffscreen.screen.method import CDIMethod, CNNMethod, as_method, decision_problem, load_cdi_model, problem_of
from diffscreen.screen.outputs import WARNING, CDIScreenSummary, RunFacts, ScreenSummary

__all__ = ["screen", "screen_cdi", "SCORE_COLUMNS", "list_entry", "strict_json"]

#: scores.csv columns of a screen with a hit/maybe/miss CNN (the per-frame numbers of issue 15 before the label)
SCORE_COLUMNS = ("file", "frame", "p_hit", "p_maybe", "p_miss", *METRIC_COLUMNS, "label")
_HDF5_SUFFIXES = (".h5", ".hdf5", ".cxi", ".nxs", ".hdf")
#: Under MPI, chunks per rank (at least one batch each): the ranks finish within about one chunk of each other,
#: so more, smaller chunks waste less at the end of a run (2 ranks, 800 frames: 4 per rank left one rank idle
#: for about half a 112-frame chunk).
CHUNKS_PER_RANK = 16
#: status column of a partial chunk row whose frame failed (else 1 kept, 0 not kept)
FAILED = "e"


def list_entry(file: str, frame: int, single_frame: bool) -> str:
    """One CrystFEL ``.lst`` line: ``file //frame`` (``file`` alone for a single-frame file)."""
    path = file.split(":/", 1)[0] if not Path(file).exists() else file
    if single_frame and not path.lower().endswith(_HDF5_SUFFIXES):
        return path
    return f"{path} //{frame}"


class _WorkList(Sequence):
    """The (file, frame) work items of a run, stored as one (file, n_frames) pair per file.

    Memory grows with the number of files, not frames; indexing and slicing
    give ``(spec, i)`` tuples as a plain list would.
    """

    def __init__(self, files):
        self.files = [(str(spec), int(n)) for spec, n in files]
        self._starts = np.cumsum([0] + [n for _, n in self.files])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self._item(j) for j in range(*k.indices(len(self)))]
        if k < 0:
            k += len(self)
        if not 0 <= k < len(self):
            raise IndexError(k)
        return self._item(k)

    def _item(self, k: int) -> tuple[str, int]:
        f = int(np.searchsorted(self._starts, k, side="right")) - 1
        return self.files[f][0], k - int(self._starts[f])


def _work_list(inputs, errors: list, opener=None) -> _WorkList:
    files = []
    for spec in inputs:
        try:
            with (open_source if opener is None else opener)(spec) as src:
                n, growing, seen = src.complete_frames, src.being_written, len(src)
        except Exception as exc:  # noqa: BLE001 - the firewall: a file that cannot be opened is its error row
            errors.append((spec, -1, problem_of(exc)))
            continue
        if growing:  # an HDF5 file its writer still adds frames to (SWMR): its whole frames so far
            why = (f"its writer still adds frames (HDF5 under SWMR): {n} of the {seen} frames written so far are "
                   "whole; `diffscreen watch` follows such a file until it is closed")
            if n == 0:
                errors.append((spec, -1, why))
                continue
            errors.append((spec, -1, f"{WARNING}{why}; the {n} were screened"))
        elif n == 0:
            errors.append((spec, -1, "the file holds no frames"))
            continue
        files.append((spec, n))
    return _WorkList(files)


class FrameReader:
    """The open source of the current file of a work list, one input open at a time.

    Work lists run through each file in order, so the current source is kept
    open until an item of another file comes; :meth:`close` closes it.
    ``opener`` (default :func:`~diffscreen.io.open_source`) opens a spec,
    e.g. with a CrystFEL geometry (:func:`~diffscreen.io.geom.open_with_geometry`).
    """

    def __init__(self, opener=None):
        self._spec, self._src = None, None
        self._open = open_source if opener is None else opener

    def source(self, spec):
        """The open source of ``spec`` (opened when another file comes)."""
        if spec != self._spec:
            self.close()
            self._src, self._spec = self._open(spec), spec
        return self._src

    def close(self) -> None:
        if self._src is not None:
            self._src.close()
        self._spec, self._src = None, None


def _kept_frame(src, i: int, d):
    """What hits.cxi stores of kept frame ``i`` (decision ``d``): the frame as read (the method's ``d.frame`` if
    it kept one) and its peaks, or, from a :class:`~diffscreen.io.geom.GeomSource`, its stacked panels and the
    peaks in their coordinates."""
    if isinstance(src, GeomSource):
        return check_frame(src.read_raw(i)), src.geometry.raw_peaks(d.peaks)
    return (d.frame if d.frame is not None else check_frame(src.read(i))), d.peaks


def notify(observer, what: str, *args) -> None:
    """Call ``observer.what(*args)`` if the observer has that method; a failing observer never stops a run.

    The observer (e.g. :class:`diffscreen.live.dashboard.LiveStats`) may have
    ``frame(frame_id, keep, label, scores, image)``, ``error(frame_id,
    message)``, ``dropped(n)`` and ``rate(frames_per_s)``.
    """
    fn = getattr(observer, what, None) if observer is not None else None
    if fn is None:
        return
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - the dashboard's bug is not the run's
        pass


class _Chunk:
    """Classify one chunk of (file, frame) items and write its partial outputs.

    A firewall: whatever goes wrong while one file is opened or one frame is
    read or classified becomes an ``error`` row naming the file, the frame and
    the cause, and the chunk goes on.  Only a failure to write the outputs
    stops it (:class:`~diffscreen.errors.OutputError`).  Every batch is one
    file's frames, so a frame gets the same path, and the same answer,
    whatever else is on the command line.
    """

    def __init__(self, method, batch_size: int, write_cxi: bool, opener=None, observer=None):
        self.method, self.batch_size, self.write_cxi = method, batch_size, write_cxi
        self.cells = method.outputs.cells
        self.reader = FrameReader(opener)
        self.observer = observer

    def _decide(self, spec, indices) -> tuple[list, bool]:
        """Decisions (or problem strings) for frames ``indices`` of ``spec``, and whether it holds one frame."""
        try:
            src = self.reader.source(spec)
            single = len(src) == 1
        except Exception as exc:  # noqa: BLE001 - the firewall: any reader failure is this file's error
            self.reader.close()
            return [problem_of(exc)] * len(indices), False
        try:
            return self.method.classify_source(src, indices), single
        except Exception as exc:  # noqa: BLE001 - the batch's forward pass failed: each frame is an error
            return [problem_of(exc)] * len(indices), single

    def _run_file(self, spec, indices, rows, errors, writer) -> None:
        """One batch of one file's frames; only kept frames are read whole, to be written to hits.cxi."""
        results, single = self._decide(spec, indices)
        for i, d in zip(indices, results):
            why = decision_problem(d)
            fr = None
            if why is None and d.keep and writer is not None:
                try:
                    fr, peaks = _kept_frame(self.reader.source(spec), i, d)
                except Exception as exc:  # noqa: BLE001 - the frame cannot be read again
                    why = problem_of(exc)
                else:
                    writer.append(fr.data, fr.meta, mask=fr.mask, label=d.label, probabilities=d.probabilities,
                                  peaks=peaks)  # fmt: skip
            if why is not None:
                rows.append([spec, i, FAILED, 0])
                errors.append([spec, i, why])
                if self.observer is not None:
                    notify(self.observer, "error", f"{spec} //{i}", why)
            else:
                d.frame = None  # written (or not wanted): the frame is not held for the rest of the chunk
                rows.append([spec, i, int(d.keep), int(single), *self.cells(d)])
                errors.extend([spec, i, f"{WARNING}{w}"] for w in d.warnings)
                if self.observer is not None:  # no per-frame id or score dict built for a run without one
                    notify(self.observer, "frame", f"{spec} //{i}", bool(d.keep), d.label,
                           dict(zip(self.method.score_columns, map(float, d.scores))), None if fr is None else fr.data)

    def run(self, items, csv_path: Path, cxi_path: Path, progress) -> None:
        """Screen ``items`` ((file, frame) pairs) and write the chunk's part files (its CSV last)."""
        rows, errors = [], []
        m = self.method
        writer = None
        try:
            if self.write_cxi:
                writer = CXIWriter(cxi_path, mask_mode="per_frame", class_names=m.class_names)
            for b in range(0, len(items), self.batch_size):
                batch = items[b : b + self.batch_size]
                t = time.perf_counter()
                for spec, group in itertools.groupby(batch, key=lambda item: item[0]):
                    self._run_file(spec, [i for _, i in group], rows, errors, writer)
                if progress:
                    progress(len(batch))
                if self.observer is not None:
                    notify(self.observer, "rate", len(batch) / max(time.perf_counter() - t, 1e-9))
            if writer is not None:
                writer.close()
            buf = _io.StringIO()
            w = csv.writer(buf)
            w.writerows(rows)
            w.writerows([["#error", *e] for e in errors])
            atomic_write_text(csv_path, buf.getvalue())  # written last: marks the chunk complete
        except BaseException as exc:
            if writer is not None:
                writer.abort()
            if isinstance(exc, OSError):
                raise output_error(exc, csv_path.parent) from None
            raise
        finally:
            self.reader.close()


def screen(
    inputs,
    out_dir,
    *,
    model=None,
    method=None,
    batch_size: int = 16,
    chunk_size: int = 256,
    resume: bool = True,
    write_cxi: bool = True,
    progress=None,
    comm="auto",
    geom=None,
    observer=None,
) -> ScreenSummary:
    """Classify every frame of ``inputs`` and write the screening outputs.

    Under ``mpirun -n N`` (or ``srun``) the chunks are shared among the N
    MPI ranks with dynamic load balancing (:mod:`diffscreen.screen.parallel`);
    the outputs are the same as a one-process run's with the same
    ``batch_size``.  Every rank must call this function with the same
    arguments; all return the same summary.

    Parameters
    ----------
    inputs : sequence of str
        Input specs (expanded file paths or ``file.h5:/dataset``).
    out_dir : str or Path
        Output folder (created; on a file system every rank can reach).
    model : ModelBundle, Classifier, path or None
        None: the bundled default model.
    method : screening method, optional
        Decides instead of ``model``: a
        :class:`~diffscreen.screen.method.ScreeningMethod`, or an object with
        ``class_names``, ``score_columns``, ``identity`` and
        ``classify(frames) -> list[FrameDecision]`` that decides on whole
        frames (:class:`~diffscreen.screen.method.PerFrame`), e.g.
        :class:`diffscreen.baselines.Peakfinder8`.
    batch_size : int
        Frames per forward pass.
    chunk_size : int
        Frames per resumable chunk.  Under MPI it is lowered (to a multiple
        of ``batch_size``, so batches stay those of a one-process run) until
        every rank gets about :data:`CHUNKS_PER_RANK` chunks.
    resume : bool
        Reuse completed chunks of an interrupted run with the same inputs
        and model; False starts afresh.
    write_cxi : bool
        Write ``hits.cxi`` (raw pixels of the kept frames).
    progress : callable, optional
        ``progress(total=None, advance=None)``: called once with ``total``,
        then with ``advance`` after every batch (under MPI: on rank 0, for
        the frames of all ranks).
    comm : "auto", mpi4py communicator or None
        "auto": ``MPI.COMM_WORLD`` when started by an MPI launcher with
        several ranks (:func:`diffscreen.screen.parallel.get_comm`); None:
        one process.
    geom : str, Path or DetectorGeometry, optional
        A CrystFEL geometry (``.geom``): every input holds stacked-panel
        frames, assembled with it (:class:`~diffscreen.io.geom.GeomSource`;
        a frame of another shape is that frame's error row).  hits.cxi then
        keeps the stacked panels (``/entry_1/data_1/data`` (N, SS, FS)), and
        ``hits.geom`` is written beside it when the geometry would not read
        that layout (:meth:`~diffscreen.io.geom.DetectorGeometry.hits_geometry_text`).
        Or a :class:`~diffscreen.io.euxfel.EuXFELRuns` (``screen --detector``):
        every input is a European XFEL run directory, whose detector modules
        it reads (EXtra-data) and assembles (EXtra-geom); hits.cxi then keeps
        the assembled frames.
    observer : object, optional
        Told of every frame as it is screened (:func:`notify`), e.g. the live
        dashboard's :class:`~diffscreen.live.dashboard.LiveStats`; one
        process only (under MPI it sees the root rank's frames).

    Returns
    -------
    ScreenSummary
        Or the summary type of the method's outputs
        (:class:`~diffscreen.screen.outputs.CDIScreenSummary` for a
        :class:`~diffscreen.screen.method.CDIMethod`).

    Raises
    ------
    ConfigError
        No inputs, or bad sizes.
    OutputError
        ``out_dir`` is a file, another run holds its lock
        (:class:`~diffscreen.io.outdir.OutputLock`), or the outputs cannot be
        written (disk full: the finished chunks stay for the resume, every
        temporary file is removed).
    ModelFileError
        The model cannot be loaded, or is not a hit/maybe/miss model.
    diffscreen.screen.parallel.RankFailed
        Under MPI, on the ranks that did not fail themselves, when another
        rank failed.
    """
    from diffscreen.screen.parallel import Team, get_comm

    if not inputs:
        raise ConfigError("no input files to screen")
    if batch_size < 1 or chunk_size < 1:
        raise ConfigError("batch_size and chunk_size must be >= 1")
    t0 = time.time()
    euxfel = geom if isinstance(geom, EuXFELRuns) else None  # --detector: run directories, opened by io.euxfel
    geom = None if euxfel is not None else geom
    geometry = None if geom is None else as_geometry(geom)  # an unusable .geom: ConfigError before any output
    opener = None if geometry is None else (lambda spec: open_with_geometry(spec, geometry))
    opener = euxfel.open if euxfel is not None else opener
    hits_geom = None if geometry is None or not write_cxi else geometry.hits_geometry_text()
    team = Team(get_comm() if comm == "auto" else comm)
    out = Path(out_dir)
    part = out / ".partial"
    lock = OutputLock(out)

    def setup():
        nonlocal method
        method = (CNNMethod(model if isinstance(model, Classifier) else Classifier(model)) if method is None
                  else as_method(method))
        if not team.is_root:
            return None
        lock.acquire()  # refuses a second run into the same folder
        remove_stale_parts(out)  # left by killed runs; no live run owns them while we hold the lock
        remove_stale_parts(part)
        if not write_cxi:  # an earlier run's hits.cxi would describe other frames than this run's hits.lst
            remove_outputs(out, ["hits.cxi"])
        if hits_geom is None:  # an earlier --geom run's hits.geom would not describe this run's hits.cxi
            remove_outputs(out, ["hits.geom"])
        file_errors: list = []
        items = _work_list(list(inputs), file_errors, opener)
        cs = chunk_size
        if team.size > 1:  # small enough chunks that the ranks can balance the load
            target = -(-len(items) // (CHUNKS_PER_RANK * team.size))
            cs = min(chunk_size, max(batch_size, -(-target // batch_size) * batch_size))
        manifest = {
            "inputs": list(inputs),
            "n_items": len(items),
            "model": method.identity,
            "chunk_size": cs,
            "write_cxi": write_cxi,
        }
        if geometry is not None:  # a resumed run must assemble with the same geometry
            manifest["geom"] = geometry.identity
        if euxfel is not None:  # ... and read the same detector the same way
            manifest["euxfel"] = euxfel.identity
        if part.exists() and (not resume or _read_json(part / "manifest.json") != manifest):
            shutil.rmtree(part)
        part.mkdir(parents=True, exist_ok=True)
        atomic_write_text(part / "manifest.json", json.dumps(manifest))
        return items.files, file_errors, cs

    try:
        summary = _screen_locked(team, setup, part, out, t0, method_of=lambda: method, batch_size=batch_size,
                                 write_cxi=write_cxi, progress=progress, opener=opener, observer=observer)
        if hits_geom is not None and team.is_root:
            atomic_write_text(out / "hits.geom", hits_geom)
        return summary
    except DiffscreenError as exc:
        if lock.held and isinstance(exc, OutputError):
            _drop_empty_partial(part)
        raise
    except OSError as exc:  # writing the outputs failed (disk full, read-only, ...): a run error
        if lock.held:
            _drop_empty_partial(part)
        raise output_error(exc, out) from None
    finally:
        lock.release()


def screen_cdi(inputs, out_dir, *, model, batch_size: int = 32, threshold: float = 0.5, progress=None,
               chunk_size: int = 512, resume: bool = True, geom=None) -> CDIScreenSummary:
    """Classify every frame of ``inputs`` into the 11 CDI classes: :func:`screen` with a :class:`CDIMethod`.

    Outputs in ``out_dir`` (each written atomically; no hits list):

    ``scores.csv``
        ``file,frame,p_<class>…,<class>…,labels,rule_violation``: one row per
        frame classified; ``p_*`` probabilities, the 0/1 columns the
        multi-hot labels at ``threshold``, ``labels`` the positive class
        names joined by ``;`` and ``rule_violation`` 1 when the predicted set
        breaks a Fig. 2 rule (Zimmermann et al. 2019).
    ``errors.csv``
        ``file,frame,error`` for frames or files that could not be screened.
    ``summary.json``
        Counts per class, rule-violation rate, model, threshold, speed.

    Parameters
    ----------
    inputs : sequence of str
        Frame specs (:func:`diffscreen.io.expand_inputs`): CXI runs, TIFFs, ...
    out_dir : str or Path
    model : str, Path or ModelBundle
        A model written by ``diffscreen train --task cdi``.
    batch_size : int
    threshold : float
        Probability at which a label is set (0 < threshold < 1).
    progress : callable, optional
        ``progress(total=None, advance=None)``.
    chunk_size : int
        Frames per resumable chunk.
    resume : bool
        Reuse the completed chunks of an interrupted screen with the same
        inputs, model and threshold; False starts afresh.
    geom : str, Path or DetectorGeometry, optional
        A CrystFEL geometry that assembles stacked-panel frames (as :func:`screen`).

    Returns
    -------
    CDIScreenSummary

    Raises
    ------
    ConfigError
        Not a CDI model, or a bad threshold (:class:`CDIMethod`) / batch size (:func:`screen`).
    """
    bundle = model if hasattr(model, "model") else load_cdi_model(model)
    return screen(inputs, out_dir, method=CDIMethod(bundle, threshold), batch_size=batch_size, chunk_size=chunk_size,
                  resume=resume, write_cxi=False, progress=progress, comm=None, geom=geom)


def _drop_empty_partial(part: Path) -> None:
    """After a failed run: remove ``.partial/`` when it holds no finished chunk (nothing to resume)."""
    try:
        if not any(part.glob("chunk_*.csv")):
            shutil.rmtree(part, ignore_errors=True)
    except OSError:
        pass


def _screen_locked(team, setup, part, out, t0, *, method_of, batch_size, write_cxi, progress,
                   opener=None, observer=None) -> ScreenSummary:
    """The body of :func:`screen` once its arguments are checked (the root rank takes the output lock in ``setup``)."""
    from diffscreen.screen.parallel import RankFailed

    files, file_errors, cs = team.bcast(team.agree(setup))
    method = method_of()
    items = _WorkList(files)
    n_chunks = -(-len(items) // cs)

    def chunk(c):
        return items[c * cs : (c + 1) * cs]

    def work(c, tick):
        worker.run(chunk(c), part / f"chunk_{c:06d}.csv", part / f"chunk_{c:06d}.cxi", tick)

    def size_of(c):
        return min((c + 1) * cs, len(items)) - c * cs

    pending = [c for c in range(n_chunks) if not (part / f"chunk_{c:06d}.csv").exists()] if team.is_root else []
    resumed = n_chunks - len(pending)
    if progress and team.is_root:
        progress(total=len(items))
        if resumed:
            progress(advance=len(items) - sum(size_of(c) for c in pending))
    worker = _Chunk(method, batch_size, write_cxi, opener, observer)
    t_work = time.time()
    n_done_now, failure = team.process(pending, work, size_of, progress if team.is_root else None)
    t_work = time.time() - t_work

    def finish():
        if failure is not None:
            raise failure
        tally, errors, n_warning = _collect(out, part, n_chunks, file_errors, write_cxi, method.outputs)
        facts = RunFacts(errors=errors, n_warning=n_warning, seconds=time.time() - t0, n_done_now=n_done_now,
                         t_work=t_work, out_dir=str(out), model=getattr(method, "path", None) or method.identity,
                         resumed_chunks=resumed, mpi_ranks=team.size, chunks_per_rank=team.chunks_per_rank)
        summary, record = method.outputs.summary(tally, facts)
        atomic_write_text(out / "summary.json", strict_json(record))
        shutil.rmtree(part, ignore_errors=True)
        return summary

    try:
        return team.finish(finish)
    except RankFailed:
        if failure is not None:  # a rank > 0 whose own chunk failed: report its own error
            raise failure from None
        raise


def strict_json(record) -> str:
    """``record`` as strict JSON (RFC 8259): NaN and ±inf become null, which every parser reads.

    Parameters
    ----------
    record : dict, list or scalar
        JSON-serialisable, with numpy scalars allowed.

    Returns
    -------
    str
        Indented JSON text.
    """

    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, (np.integer, np.bool_)):
            return v.item()
        if isinstance(v, (float, np.floating)):
            return float(v) if math.isfinite(v) else None
        return v

    return json.dumps(clean(record), indent=2, allow_nan=False, default=float)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _collect(out: Path, part: Path, n_chunks: int, file_errors: list, write_cxi: bool, outputs):
    """Merge the chunks' part files into the final outputs, streaming (memory independent of the run's length).

    Returns
    -------
    tally
        ``outputs.tally()`` after every classified frame's row was added.
    errors : list of (file, frame, message)
        errors.csv rows, warnings included.
    n_warning : int
    """
    tally = outputs.tally()
    errors = list(file_errors)
    n_warning = sum(why.startswith(WARNING) for _, _, why in file_errors)
    failed = outputs.error_cells()
    names = ("scores.csv", "errors.csv") + (("hits.lst",) if outputs.lists_hits else ())
    with ExitStack() as stack:  # files appear (are renamed) only when all are written; scores.csv last
        paths = {n: stack.enter_context(temporary_path(out / n)) for n in names}
        fh_scores = stack.enter_context(open(paths["scores.csv"], "w", newline=""))
        fh_lst = stack.enter_context(open(paths["hits.lst"], "w")) if outputs.lists_hits else None
        w = csv.writer(fh_scores, lineterminator=outputs.lineterminator)
        w.writerow(("file", "frame", *outputs.columns))
        if failed is not None:
            w.writerows([spec, i, *failed] for spec, i, why in file_errors if not why.startswith(WARNING))
        for c in range(n_chunks):
            with open(part / f"chunk_{c:06d}.csv", newline="") as fh:
                for row in csv.reader(fh):
                    if row[0] == "#error":
                        errors.append((row[1], int(row[2]), row[3]))
                        n_warning += row[3].startswith(WARNING)
                        continue
                    spec, i, status, single, *cells = row
                    if status == FAILED:
                        if failed is not None:
                            w.writerow([spec, i, *failed])
                        continue
                    w.writerow([spec, i, *cells])
                    if status == "1" and fh_lst is not None:
                        fh_lst.write(list_entry(spec, int(i), single == "1") + "\n")
                    tally.add(cells, status == "1")
        fh_scores.close()
        if fh_lst is not None:
            fh_lst.close()
        with open(paths["errors.csv"], "w", newline="") as fh:
            ew = csv.writer(fh, lineterminator=outputs.lineterminator)
            ew.writerow(("file", "frame", "error"))
            ew.writerows(errors)
        if write_cxi:
            merge_cxi([part / f"chunk_{c:06d}.cxi" for c in range(n_chunks)], out / "hits.cxi")
    return tally, errors, n_warning
