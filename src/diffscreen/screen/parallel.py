"""Scale-out of screening over MPI ranks (mpi4py), as OnDA Monitor, psana and cctbx.xfel do.

``mpirun -n N diffscreen screen ...`` starts N copies of the program; each
one finds its rank here and :func:`diffscreen.screen.screen` shares the
run's resumable chunks among them:

* rank 0 lists the work (opening every input once), prepares the output
  folder and broadcasts the list; every rank loads the model;
* chunks are handed out one at a time by rank 0 (dynamic load balancing):
  rank 0 sends every rank its first chunk before it starts one of its own,
  and a rank asks for its next chunk as soon as it starts one, so it never
  waits, and a slow rank simply takes fewer chunks.  Rank 0 screens chunks
  too and answers requests between its batches;
* each chunk writes its part files (``DIR/.partial/chunk_*.csv`` and
  ``.cxi``) exactly as a single process does; rank 0 merges them in chunk
  order, so scores.csv, hits.lst and hits.cxi are those of a one-process
  run with the same batch size.

Errors: a rank that fails tells rank 0, which stops handing out chunks,
lets every rank finish the chunk in hand and then ends the run on all
ranks with an error (non-zero exit, no rank left waiting).  Completed
chunks stay in ``.partial``, so the same command resumes.

mpi4py is imported only when the environment says the process was started
by an MPI launcher (OpenMPI ``OMPI_COMM_WORLD_SIZE``, MPICH/Intel MPI/Slurm
PMI ``PMI_SIZE``, PMIx ``PMIX_RANK``), so a plain run never loads MPI.

Threads: each rank uses its share of the node's cores for torch and for the
BLAS/OpenMP pools (:func:`rank_thread_share`, :func:`limit_threads`), so N
ranks on a node never run more threads than it has cores.
"""

from __future__ import annotations

import os
import time
from collections import deque

from diffscreen.errors import EXIT_RUN, ConfigError, DiffscreenError

__all__ = ["mpi_launched", "launch_rank", "get_comm", "rank_thread_share", "limit_threads", "RankFailed", "Team"]

_RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")
#: ranks on this node: OpenMPI, MPICH/Intel MPI (Hydra), Slurm (e.g. "32" or "32(x4)")
_LOCAL_SIZE_VARS = ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE")
#: ranks in the job, the fallback when no launcher says how many share this node
_WORLD_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS")
#: read by BLAS/OpenMP libraries when they load: libraries loaded later, and child processes, see the share
_THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
_TAG_REQ, _TAG_REPLY = 4711, 4712
_POLL_S = 0.002  # wait by polling: a blocking receive in OpenMPI spins a core


class RankFailed(DiffscreenError, RuntimeError):
    """Another MPI rank failed, so this one stopped too (its own error was printed there)."""

    exit_status = EXIT_RUN


def mpi_launched(env=None) -> bool:
    """True when an MPI launcher started this process as one of several ranks (no mpi4py import).

    ``env``: the environment to read (default ``os.environ``).
    """
    env = os.environ if env is None else env
    if "OMPI_COMM_WORLD_SIZE" in env or "PMI_SIZE" in env:
        return int(env.get("OMPI_COMM_WORLD_SIZE") or env.get("PMI_SIZE") or 1) > 1
    return "PMIX_RANK" in env  # PMIx (e.g. srun --mpi=pmix) sets no size variable


def launch_rank() -> int:
    """This process's MPI rank according to the launcher's environment (0 when not under MPI)."""
    for var in _RANK_VARS:
        if var in os.environ:
            return int(os.environ[var])
    return 0


def _leading_int(value) -> int:
    """The leading integer of an environment value ("4", "32(x4)", "2,1"); 0 when there is none."""
    digits = ""
    for ch in str(value).strip():
        if not ch.isdigit():
            break
        digits += ch
    return int(digits) if digits else 0


def rank_thread_share(threads: int = 0, env=None, cpus: int | None = None) -> int:
    """Threads this process should use: ``threads`` if given, else its share of the node's cores.

    Parameters
    ----------
    threads : int
        An explicit thread count (``screen --threads``); any value > 0 is
        returned as is.
    env : mapping, optional
        The environment to read (default ``os.environ``).
    cpus : int, optional
        CPUs this process may run on (default: ``len(os.sched_getaffinity(0))``,
        which honours taskset, cgroup cpusets and an MPI launcher's binding).

    Returns
    -------
    int
        ``threads`` when > 0; without an MPI launcher, ``cpus``; as one of
        several MPI ranks, ``max(1, cpus // local_ranks)``, the ranks on this
        node being read from ``OMPI_COMM_WORLD_LOCAL_SIZE`` (OpenMPI),
        ``MPI_LOCALNRANKS`` (MPICH, Intel MPI) or ``SLURM_NTASKS_PER_NODE``,
        else the job's size (``OMPI_COMM_WORLD_SIZE``, ``PMI_SIZE``,
        ``SLURM_NTASKS``).

    Notes
    -----
    When the launcher binds each rank to its own cores (OpenMPI's default
    ``--bind-to core`` for 2 ranks, ``srun --cpus-per-task``), ``cpus`` is
    already the rank's share and the division can only lower it, never
    oversubscribe; pass ``threads`` to use more.

    Examples
    --------
    >>> rank_thread_share(env={"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_SIZE": "4"}, cpus=16)
    4
    >>> rank_thread_share(3, env={"OMPI_COMM_WORLD_SIZE": "4"}, cpus=16)
    3
    >>> rank_thread_share(env={}, cpus=16)
    16
    """
    if threads and threads > 0:
        return int(threads)
    env = os.environ if env is None else env
    if cpus is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cpus = os.cpu_count() or 1
    cpus = max(1, int(cpus))
    if not mpi_launched(env):
        return cpus
    local = next((n for n in (_leading_int(env.get(v, "")) for v in _LOCAL_SIZE_VARS) if n > 0), 0)
    if not local:
        local = next((n for n in (_leading_int(env.get(v, "")) for v in _WORLD_SIZE_VARS) if n > 0), 1)
    return max(1, cpus // local)


def limit_threads(n: int) -> int:
    """Make this process (and the processes it starts) use ``n`` threads for its numerical work.

    Sets torch's intra-op threads and, where torch still allows it (before
    its first parallel work), its inter-op threads; limits the BLAS and
    OpenMP thread pools of the libraries already loaded (OpenBLAS, MKL,
    BLIS, OpenMP; ``threadpoolctl``); and sets ``OMP_NUM_THREADS``,
    ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS`` and the like, which
    libraries loaded later and child processes read.  Screening uses no
    numba-parallel code, so numba's pool is left alone.

    Parameters
    ----------
    n : int
        Threads (at least 1).

    Returns
    -------
    int
        ``n``.
    """
    n = max(1, int(n))
    for var in _THREAD_ENV_VARS:
        os.environ[var] = str(n)
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # torch allows it once, before any inter-op work
        pass
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # comes with scikit-learn; without it the variables above still hold for later loads
        return n
    threadpool_limits(limits=n)  # not used as a context: the limits stay
    return n


def get_comm():
    """``mpi4py.MPI.COMM_WORLD`` when launched as one of several MPI ranks, else None.

    Raises
    ------
    ConfigError
        Launched by mpirun/srun with several ranks but mpi4py is missing.
    """
    if not mpi_launched():
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise ConfigError(
            "started by an MPI launcher but mpi4py is not installed: pip install 'diffscreen[mpi]'"
        ) from None
    comm = MPI.COMM_WORLD
    return comm if comm.Get_size() > 1 else None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, DiffscreenError):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return f"{type(exc).__name__}: {exc}"


class Team:
    """The ranks screening one run: one process (``comm=None``) or an MPI communicator.

    Parameters
    ----------
    comm : mpi4py communicator or None
    """

    def __init__(self, comm=None):
        self.comm = comm
        self.rank = comm.Get_rank() if comm is not None else 0
        self.size = comm.Get_size() if comm is not None else 1
        self.is_root = self.rank == 0
        #: chunks each rank did in :meth:`process` (known on rank 0)
        self.chunks_per_rank = [0] * self.size

    def agree(self, fn):
        """Run ``fn()`` on every rank; if it fails on any rank, raise on all of them.

        The failing rank re-raises its own exception; the others raise
        :class:`RankFailed` naming it.
        """
        if self.comm is None:
            return fn()
        err, out = None, None
        try:
            out = fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the other ranks, then re-raised
            err = exc
        msgs = self.comm.allgather(None if err is None else _describe(err))
        if err is not None:
            raise err
        for r, m in enumerate(msgs):
            if m is not None:
                raise RankFailed(f"rank {r} failed: {m}")
        return out

    def bcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        return obj if self.comm is None else self.comm.bcast(obj, root=0)

    def finish(self, fn):
        """Run ``fn()`` on rank 0 and hand its result (or its failure) to every rank."""
        if self.comm is None:
            return fn()
        err, out = None, None
        if self.is_root:
            try:
                out = ("ok", fn())
            except BaseException as exc:  # noqa: BLE001
                err, out = exc, ("err", _describe(exc))
        out = self.comm.bcast(out, root=0)
        if err is not None:
            raise err
        if out[0] == "err":
            raise RankFailed(out[1])
        return out[1]

    def process(self, pending, work, size_of, progress=None) -> tuple[int, BaseException | None]:
        """Do ``work(c, tick)`` for every chunk index in ``pending``, shared among the ranks.

        Parameters
        ----------
        pending : sequence of int
            Chunks to do (only rank 0's list is used).
        work : callable
            ``work(c, tick)``: does chunk ``c``; calls ``tick(n)`` after
            each batch of ``n`` frames.
        size_of : callable
            ``size_of(c)``: frames in chunk ``c``.
        progress : callable, optional
            ``progress(advance=n)`` on rank 0 as frames are done anywhere.

        Returns
        -------
        n_done : int
            Frames done in this call (rank 0: by all ranks; other ranks: 0).
        error : exception or None
            On rank 0 the first failure of any rank (to raise after the
            results are handed out); elsewhere this rank's own failure.
        """
        if self.comm is None:
            n = 0
            for c in pending:
                work(c, (lambda k: progress(advance=k)) if progress else None)
                n += size_of(c)
                self.chunks_per_rank[0] += 1
            return n, None
        if self.is_root:
            return _Dispatcher(self.comm, pending, progress, self.chunks_per_rank).run(work, size_of)
        return 0, _worker(self.comm, work, size_of)


class _Dispatcher:
    """Rank 0: hands out chunks on request, screens chunks itself in between."""

    def __init__(self, comm, pending, progress, chunks_per_rank):
        from mpi4py import MPI

        self.chunks_per_rank = chunks_per_rank

        self.MPI, self.comm, self.progress = MPI, comm, progress
        self.queue = deque(pending)
        self.active = set(range(1, comm.Get_size()))
        self.failure: BaseException | None = None
        self.n_done = 0

    def _advance(self, n: int) -> None:
        self.n_done += n
        if self.progress and n:
            self.progress(advance=n)

    def _answer_one(self) -> None:
        status = self.MPI.Status()
        kind, value = self.comm.recv(source=self.MPI.ANY_SOURCE, tag=_TAG_REQ, status=status)
        src = status.Get_source()
        if kind == "req":
            c = self.queue.popleft() if self.queue and self.failure is None else -1
            self.comm.send(c, dest=src, tag=_TAG_REPLY)
        elif kind == "done":
            self._advance(value)
            self.chunks_per_rank[src] += 1
        elif kind == "bye":
            self.active.discard(src)
        elif kind == "err":
            self.active.discard(src)
            if self.failure is None:
                self.failure = RankFailed(f"rank {src} failed: {value}")

    def poll(self) -> None:
        """Answer every message already waiting (never blocks)."""
        while self.comm.Iprobe(source=self.MPI.ANY_SOURCE, tag=_TAG_REQ):
            self._answer_one()

    def run(self, work, size_of):
        def tick(n):
            self._advance(n)
            self.poll()

        for src in sorted(self.active):  # unasked: a rank still loading its model finds its chunk waiting
            self.comm.send(self.queue.popleft() if self.queue else -1, dest=src, tag=_TAG_REPLY)
        try:
            while True:
                self.poll()
                if not self.queue or self.failure is not None:
                    break
                work(self.queue.popleft(), tick)
                self.chunks_per_rank[0] += 1
        except BaseException as exc:  # noqa: BLE001 - stop the others first, then report
            if self.failure is None:
                self.failure = exc
        while self.active:  # every other rank finishes its chunk in hand and says bye
            if self.comm.Iprobe(source=self.MPI.ANY_SOURCE, tag=_TAG_REQ):
                self._answer_one()
            else:
                time.sleep(_POLL_S)
        return self.n_done, self.failure


def _worker(comm, work, size_of) -> BaseException | None:
    """Ranks > 0: take the first chunk rank 0 sends, then ask for the next (one ahead) until it answers -1."""

    def reply() -> int:
        while not comm.Iprobe(source=0, tag=_TAG_REPLY):
            time.sleep(_POLL_S)
        return comm.recv(source=0, tag=_TAG_REPLY)

    outstanding = True  # the first chunk (or -1) that rank 0 sends every rank unasked
    try:
        c = reply()
        outstanding = False
        while c >= 0:
            comm.send(("req", None), dest=0, tag=_TAG_REQ)  # the next chunk, while this one runs
            outstanding = True
            work(c, None)
            comm.send(("done", size_of(c)), dest=0, tag=_TAG_REQ)
            c = reply()
            outstanding = False
        comm.send(("bye", None), dest=0, tag=_TAG_REQ)
        return None
    except BaseException as exc:  # noqa: BLE001 - rank 0 must hear of it, or it would wait forever
        comm.send(("err", _describe(exc)), dest=0, tag=_TAG_REQ)
        if outstanding:
            reply()  # rank 0 answers every request; take the answer so no message is left over
        return exc
