"""Coverage-guided fuzzing of diffscreen's readers and model loader (issue 18, "Fuzzing").

Usage::

    python bench/fuzz.py --minutes 30 --out bench/results/fuzz.json

Two targets, each run in its own worker process with ``RLIMIT_AS`` (default
4 GiB) and a per-input timeout (default 10 s), so that a crash in C, a hang or
a memory blow-up is counted, not suffered:

``reader``  :func:`diffscreen.io.open_source` on a mutated file of every format
            (miniCBF, x-CBF_PACKED imgCIF, SMV, EDF, TIFF, CXI, HDF5 dataset,
            gzip/bzip2 wrappers; tests/corpus.py ``write_seeds``), then ``len``,
            ``shape``, every frame (up to 8) read and checked, and a window read
            where the source has ``read_region``;
``model``   :func:`diffscreen.models.load_model` on a mutated copy of the
            bundled fast model, then the screening method built on it (as
            ``screen --model`` does); mutations of the bytes, of the JSON
            metadata record (a value replaced or deleted) and of the tensors
            (NaN/inf, shapes, dtypes).

An input passes when the target returns or raises a
:class:`~diffscreen.errors.DiffscreenError` with a one-line message.
Anything else is counted and its input saved under ``--crashes``
(``bench/results/fuzz-crashes/``): ``crash`` (another exception, or the
worker killed by a signal such as SIGSEGV), ``hang`` (no answer within the
timeout), ``memory`` (``MemoryError`` or an abort under ``RLIMIT_AS``),
``multiline`` (a DiffscreenError message of several lines) and, for models,
``accepted_invalid`` (a file loaded although its weights are not finite, its
class names lack "miss", its format_version is unknown or its class count
differs from its outputs).  Inputs answered correctly but slower than a fifth
of the timeout are kept too (``slow``, not a failure): near-hangs to look at.

Coverage guidance: the worker traces Python line-to-line edges in diffscreen,
fabio and h5py (``sys.settrace``); an input that reaches a new edge joins the
queue that later inputs are mutated from (AFL-style).  Mutations are drawn
from ``random.Random(--seed)``, so a run is reproducible up to timing.

The JSON written to ``--out`` holds the counts per target; the "Fuzzing"
section of docs/reliability.md (between ``<!-- fuzz:begin -->`` and
``<!-- fuzz:end -->``) is rewritten from it unless ``--no-doc``.

The mutation operators (:func:`apply_ops`, :func:`mutate_model`) and the
:class:`Worker` are shared with tests/test_fuzz.py, whose short hypothesis
run uses the same targets.
"""

from __future__ import annotations

import argparse
import bz2
import datetime as _dt
import gzip
import hashlib
import json
import os
import platform
import random
import re
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("reader", "model")
MAX_FRAMES = 8
MAX_INPUT_BYTES = 4 << 20
DOC_BEGIN, DOC_END = "<!-- fuzz:begin -->", "<!-- fuzz:end -->"
FAILURES = ("crash", "hang", "memory", "multiline", "accepted_invalid")
_COVERAGE_PARTS = (os.sep + "diffscreen" + os.sep, os.sep + "fabio" + os.sep, os.sep + "h5py" + os.sep)

# --------------------------------------------------------------------------- mutation operators

#: Integers that break parsers: sign and width boundaries, sizes from the issue.
INTERESTING_INTS = (0, 1, -1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 40000, 100000,
                    0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32, (1 << 63) - 1, (1 << 64) - 1)
#: Replacements for numbers written as text in headers (SMV, EDF, CBF MIME, Pilatus).
INTERESTING_TEXT = (b"0", b"-1", b"1", b"100000", b"4294967296", b"1e30", b"1e-12", b"nan", b"inf", b"-0",
                    b"99999999999999999999", b"", b"1.5", b"65535", b"2147483648", b"-100000")
#: Replacements for values of a model's JSON metadata record.
INTERESTING_JSON = (0, -1, 1, 40000, 10 ** 30, 2 ** 31, 1e308, -1e308, 1e-300, None, "", "miss", "x" * 1000, [],
                    {}, True, False, [1, 2, 3], {"a": 1}, ["hit", "maybe"], ["hit", "maybe", "other"], 0.5)
_NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
OP_NAMES = ("bit", "byte", "hbyte", "int", "del", "dup", "ins", "trunc", "num", "splice")


def _at(data: bytes, p: float) -> int:
    return min(int(p * len(data)), max(len(data) - 1, 0))


def apply_ops(data: bytes, ops, other: bytes = b"") -> bytes:
    """Apply byte-level mutation operations in order (deterministic).

    Parameters
    ----------
    data : bytes
    ops : sequence of tuples
        ``("bit", p, k)`` flip bit ``k`` of the byte at fraction ``p`` of the
        length; ``("byte", p, v)`` set it to ``v``; ``("hbyte", i, v)`` set
        byte ``i`` (an absolute offset, headers live at the start);
        ``("int", p, width, j, big)`` write ``INTERESTING_INTS[j]`` as a
        ``width``-byte integer; ``("del", p, n)``, ``("dup", p, n)``,
        ``("ins", p, raw)``; ``("trunc", p)``; ``("num", k, j)`` replace the
        ``k``-th number written as text in the first 8 KB with
        ``INTERESTING_TEXT[j]``; ``("splice", p, q)`` this input up to ``p``,
        then ``other`` from ``q``.
    other : bytes
        Another input for ``splice``.

    Returns
    -------
    bytes
        At most :data:`MAX_INPUT_BYTES` long.
    """
    b = bytearray(data)
    for op in ops:
        kind = op[0]
        if kind == "trunc":
            del b[_at(b, op[1]) :]
        elif not b and kind not in ("ins",):
            continue
        elif kind == "bit":
            b[_at(b, op[1])] ^= 1 << (op[2] % 8)
        elif kind == "byte":
            b[_at(b, op[1])] = op[2] % 256
        elif kind == "hbyte":
            b[op[1] % len(b)] = op[2] % 256
        elif kind == "int":
            width = op[2] if op[2] in (1, 2, 4, 8) else 4
            v = INTERESTING_INTS[op[3] % len(INTERESTING_INTS)] % (1 << (8 * width))
            i = _at(b, op[1])
            b[i : i + width] = v.to_bytes(width, "big" if op[4] else "little")
        elif kind == "del":
            i = _at(b, op[1])
            del b[i : i + max(int(op[2]), 1)]
        elif kind == "dup":
            i = _at(b, op[1])
            b[i:i] = b[i : i + max(int(op[2]), 1)]
        elif kind == "ins":
            i = _at(b, op[1]) if b else 0
            b[i:i] = bytes(op[2])
        elif kind == "num":
            head = bytes(b[:8192])
            found = list(_NUMBER.finditer(head))
            if found:
                m = found[op[1] % len(found)]
                b[m.start() : m.end()] = INTERESTING_TEXT[op[2] % len(INTERESTING_TEXT)]
        elif kind == "splice" and other:
            b = b[: _at(b, op[1])] + bytearray(other[_at(other, op[2]) :])
        if len(b) > MAX_INPUT_BYTES:
            del b[MAX_INPUT_BYTES:]
    return bytes(b)


def random_ops(rng: random.Random, n: int | None = None) -> list[tuple]:
    """A random list of operations for :func:`apply_ops` (1 to 6, biased to few)."""
    n = n if n is not None else min(1 + int(rng.expovariate(0.7)), 6)
    ops = []
    for _ in range(n):
        kind = rng.choice(OP_NAMES + ("num", "num", "hbyte", "int"))  # header-aware operations more often
        p = rng.random() ** 2 if rng.random() < 0.5 else rng.random()  # half of them near the start
        if kind == "bit":
            ops.append(("bit", p, rng.randrange(8)))
        elif kind == "byte":
            ops.append(("byte", p, rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))))
        elif kind == "hbyte":
            ops.append(("hbyte", rng.randrange(4096), rng.randrange(256)))
        elif kind == "int":
            ops.append(("int", p, rng.choice((1, 2, 4, 8)), rng.randrange(len(INTERESTING_INTS)), rng.random() < 0.3))
        elif kind == "del":
            ops.append(("del", p, rng.choice((1, 2, 4, 16, 256, 4096))))
        elif kind == "dup":
            ops.append(("dup", p, rng.choice((1, 4, 64, 1024))))
        elif kind == "ins":
            ops.append(("ins", p, bytes(rng.randrange(256) for _ in range(rng.choice((1, 4, 16))))))
        elif kind == "trunc":
            ops.append(("trunc", rng.random()))
        elif kind == "num":
            ops.append(("num", rng.randrange(64), rng.randrange(len(INTERESTING_TEXT))))
        else:
            ops.append(("splice", rng.random(), rng.random()))
    return ops


def compression_of(name: str) -> str | None:
    """'gzip', 'bzip2' or None, from a seed's name."""
    return "gzip" if name.endswith(".gz") else "bzip2" if name.endswith(".bz2") else None


def mutate_file(data: bytes, ops, *, name: str = "", inner: bool = False, other: bytes = b"") -> bytes:
    """Mutate a seed; with ``inner``, a compressed seed's decompressed bytes (then compressed again).

    Mutating the compressed bytes tests the decompression path, mutating
    inside it the format parser behind it.
    """
    comp = compression_of(name)
    if inner and comp is not None:
        plain = gzip.decompress(data) if comp == "gzip" else bz2.decompress(data)
        plain = apply_ops(plain, ops, other)
        return gzip.compress(plain, mtime=0) if comp == "gzip" else bz2.compress(plain)
    return apply_ops(data, ops, other)


def _json_paths(value, prefix=()) -> list[tuple]:
    """Every key path of a JSON value, parents before children, in a fixed order."""
    out = [prefix]
    if isinstance(value, dict):
        for k in sorted(value, key=str):
            if k in ("training", "metrics") and not prefix:  # long records the loader barely reads
                out.append((k,))
                continue
            out += _json_paths(value[k], prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value[:8]):
            out += _json_paths(v, prefix + (i,))
    return out


def _set_path(value, path, new, delete=False):
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        value = dict(value)
        if delete and not rest:
            value.pop(head, None)
        else:
            value[head] = _set_path(value.get(head), rest, new, delete)
    elif isinstance(value, list) and isinstance(head, int) and head < len(value):
        value = list(value)
        if delete and not rest:
            value.pop(head)
        else:
            value[head] = _set_path(value[head], rest, new, delete)
    return value


#: Tensor mutations of a model file: what a damaged or hostile file may hold.
TENSOR_OPS = ("nan", "inf", "huge", "zero_dim", "transpose", "int", "drop", "extra", "scalar", "float16")


def mutate_model(tensors: dict, record, ops) -> tuple[dict, str | None]:
    """A model file's tensors and metadata (as text) after structured operations.

    Parameters
    ----------
    tensors : dict of str -> numpy array
    record : JSON value
        The diffscreen metadata record.
    ops : sequence of tuples
        ``("json", k, j)`` set the ``k``-th key path to ``INTERESTING_JSON[j]``
        (or NaN/Infinity for j = -1/-2); ``("jdel", k)`` delete it;
        ``("tensor", k, t)`` apply ``TENSOR_OPS[t]`` to the ``k``-th tensor;
        ``("raw", text)`` replace the record's text.

    Returns
    -------
    tensors : dict
    metadata : str
    """
    import numpy as np

    with np.errstate(all="ignore"):  # NaN/inf cast to int, x 1e30: that is the point
        return _mutate_model(tensors, record, ops)


def _mutate_model(tensors, record, ops):
    import numpy as np

    t = dict(tensors)
    rec = json.loads(json.dumps(record))
    raw = None
    names = sorted(t)
    for op in ops:
        if op[0] in ("json", "jdel"):
            paths = _json_paths(rec)
            path = paths[op[1] % len(paths)]
            if op[0] == "jdel":
                rec = _set_path(rec, path, None, delete=True)
            else:
                j = op[2]
                new = float("nan") if j == -1 else float("inf") if j == -2 else INTERESTING_JSON[j % len(INTERESTING_JSON)]
                rec = _set_path(rec, path, new)
            raw = None
        elif op[0] == "raw":
            raw = op[1]
        elif op[0] == "tensor" and names:
            name = names[op[1] % len(names)]
            kind = TENSOR_OPS[op[2] % len(TENSOR_OPS)]
            a = t.get(name)
            if a is None:
                continue
            if kind == "nan" and a.dtype.kind == "f":
                a = a.copy()
                a.flat[0] = np.nan
            elif kind == "inf" and a.dtype.kind == "f":
                a = np.full_like(a, np.inf)
            elif kind == "huge" and a.dtype.kind == "f":
                a = a * np.float32(1e30)
            elif kind == "zero_dim":
                a = np.zeros((0,) + a.shape[1:], a.dtype)
            elif kind == "transpose" and a.ndim >= 2:
                a = np.ascontiguousarray(a.swapaxes(0, 1))
            elif kind == "int":
                a = a.astype(np.int64)
            elif kind == "drop":
                t.pop(name)
                continue
            elif kind == "extra":
                t[name + ".extra"] = np.zeros(3, np.float32)
            elif kind == "scalar":
                a = np.zeros((), a.dtype)
            elif kind == "float16" and a.dtype.kind == "f":
                a = a.astype(np.float16)
            t[name] = a
    return t, (raw if raw is not None else json.dumps(rec))


def random_model_ops(rng: random.Random, n_paths: int = 64, n_tensors: int = 32) -> list[tuple]:
    """1 to 3 random structured model operations."""
    ops = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        r = rng.random()
        if r < 0.55:
            ops.append(("json", rng.randrange(n_paths), rng.choice((-1, -2)) if rng.random() < 0.1
                        else rng.randrange(len(INTERESTING_JSON))))
        elif r < 0.7:
            ops.append(("jdel", rng.randrange(n_paths)))
        elif r < 0.95:
            ops.append(("tensor", rng.randrange(n_tensors), rng.randrange(len(TENSOR_OPS))))
        else:
            ops.append(("raw", rng.choice(('{"format_version": 1', "[]", "null", "1", '"x"', "{}", "\x00"))))
    return ops


def read_model_file(path) -> tuple[dict, object]:
    """Tensors (numpy) and the diffscreen record of a safetensors model file."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    with safe_open(str(path), framework="np") as f:
        record = json.loads(f.metadata()["diffscreen"])
    return load_file(str(path)), record


def write_model_bytes(tensors: dict, metadata: str) -> bytes:
    """A safetensors file's bytes."""
    from safetensors.numpy import save

    return save(tensors, metadata={"diffscreen": metadata})


# --------------------------------------------------------------------------- the worker (child process)


class _Coverage:
    """Line-to-line edges reached in the packages of interest (``sys.settrace``)."""

    def __init__(self, parts=_COVERAGE_PARTS):
        self.parts = parts
        self.seen: set = set()
        self.new: list = []
        self._ok: dict = {}

    def _global(self, frame, event, arg):
        co = frame.f_code
        ok = self._ok.get(co)
        if ok is None:
            ok = self._ok[co] = any(p in co.co_filename for p in self.parts)
        if not ok:
            return None
        prev = [-1]
        fname = co.co_filename
        seen, new = self.seen, self.new

        def local(frame, event, arg):
            if event == "line":
                key = (fname, prev[0], frame.f_lineno)
                if key not in seen:
                    seen.add(key)
                    new.append(key)
                prev[0] = frame.f_lineno
            return local

        return local

    def start(self):
        sys.settrace(self._global)

    def stop(self):
        sys.settrace(None)

    def take(self) -> list[int]:
        out = [zlib.crc32(f"{os.path.basename(f)}:{a}:{b}".encode()) for f, a, b in self.new]
        self.new = []
        return out


def _one_line(exc) -> bool:
    return "\n" not in str(exc)


def _read_all(spec: str) -> dict:
    from diffscreen.io import open_source
    from diffscreen.io.frame import check_frame

    info = {}
    with open_source(spec) as src:
        n = len(src)
        info["frames"] = n
        shape = tuple(src.shape)
        for i in range(min(n, MAX_FRAMES)):
            fr = src.read(i)
            try:
                check_frame(fr)
            except Exception as exc:  # a BadFrameError is a fine answer; anything else is not
                from diffscreen.errors import DiffscreenError

                if not isinstance(exc, DiffscreenError):
                    raise
        if n and hasattr(src, "read_region") and len(shape) == 2 and min(shape) > 0:
            src.read_region(0, (0, min(8, shape[0])), (0, min(8, shape[1])))
    return info


def _load(spec: str) -> dict:
    """load_model, then the screening method built on it (which needs a 'miss' class), as `screen` does."""
    import math

    from diffscreen.models import load_model
    from diffscreen.models.inference import Classifier
    from diffscreen.screen import CNNMethod

    b = load_model(spec)
    CNNMethod(Classifier(b))
    problems = []
    for name, p in b.model.state_dict().items():
        if p.is_floating_point() and not bool(p.isfinite().all()):
            problems.append(f"non-finite weights in {name}")
            break
    names = tuple(b.class_names)
    if "miss" not in names:
        problems.append(f"class names {names} lack 'miss'")
    if b.meta.get("format_version") != 1:
        problems.append(f"format_version {b.meta.get('format_version')!r}")
    try:
        out = [m for m in b.model.modules() if hasattr(m, "out_features")][-1].out_features
        if out != len(names):
            problems.append(f"{len(names)} class names for {out} outputs")
    except IndexError:
        pass
    size = (b.arch_kwargs or {}).get("input_size") if isinstance(b.arch_kwargs, dict) else None
    if isinstance(size, (int, float)) and (not math.isfinite(size) or size > 8192):
        problems.append(f"input_size {size}")
    return {"accepted_invalid": problems} if problems else {}


def run_target(target: str, spec: str) -> dict:
    """Run one input through a target in this process; the outcome as a dict (never raises)."""
    import traceback

    from diffscreen.errors import DiffscreenError

    t0 = time.perf_counter()
    try:
        info = _read_all(spec) if target == "reader" else _load(spec)
        if info.get("accepted_invalid"):
            res = {"status": "accepted_invalid", "msg": "; ".join(info["accepted_invalid"])}
        else:
            res = {"status": "ok"}
    except DiffscreenError as exc:
        res = {"status": "error" if _one_line(exc) else "multiline", "exc": type(exc).__name__, "msg": str(exc)[:400]}
    except MemoryError as exc:
        res = {"status": "memory", "exc": "MemoryError", "msg": str(exc)[:400]}
    except BaseException as exc:  # noqa: BLE001 - that is what we are looking for
        tb = traceback.extract_tb(exc.__traceback__)
        where = next((f"{Path(fr.filename).name}:{fr.lineno}" for fr in reversed(tb)
                      if os.sep + "diffscreen" + os.sep in fr.filename), None)
        last = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else "?"
        res = {"status": "crash", "exc": type(exc).__name__, "msg": str(exc)[:400], "where": where or last,
               "tb": "".join(traceback.format_exception(exc))[-4000:]}
    res["seconds"] = round(time.perf_counter() - t0, 4)
    return res


def worker_main(target: str, coverage: bool) -> int:
    """The worker loop: one JSON request per stdin line, one JSON answer per stdout line."""
    import logging
    import warnings

    logging.disable(logging.CRITICAL)  # fabio logs every checksum mismatch
    warnings.simplefilter("ignore")
    out = sys.stdout
    sys.stdout = open(os.devnull, "w")  # nothing but answers on the pipe
    # import everything a target needs before saying ready (the first input is not charged for it)
    import diffscreen.io  # noqa: F401
    from diffscreen.io import cbf, fabio_any, hdf5, single  # noqa: F401

    if target == "model":
        import diffscreen.models  # noqa: F401
        import diffscreen.models.inference  # noqa: F401
        import diffscreen.screen.runner  # noqa: F401
    cov = _Coverage() if coverage else None
    out.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        if cov is not None:
            cov.start()
        try:
            res = run_target(target, req["spec"])
        finally:
            if cov is not None:
                cov.stop()
        if cov is not None:
            res["cov"] = cov.take()
        out.write(json.dumps(res) + "\n")
        out.flush()
    return 0


# --------------------------------------------------------------------------- the worker (parent side)


class Worker:
    """A target's worker process, limited by ``RLIMIT_AS``; :meth:`run` answers within a timeout.

    Parameters
    ----------
    target : {"reader", "model"}
    rlimit_bytes : int
        Address-space limit of the worker (``RLIMIT_AS``).
    coverage : bool
        Trace coverage (slower; the answers then carry ``cov``).
    log_dir : str or Path, optional
        Where the worker's stderr goes (a temporary folder by default).
    """

    STARTUP_TIMEOUT_S = 180

    def __init__(self, target: str, *, rlimit_bytes: int = 4 << 30, coverage: bool = False, log_dir=None):
        self.target, self.rlimit, self.coverage = target, int(rlimit_bytes), coverage
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="diffscreen-fuzz-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.proc = None
        self.starts = 0

    def _limits(self):
        import resource

        os.setsid()
        resource.setrlimit(resource.RLIMIT_AS, (self.rlimit, self.rlimit))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    def start(self) -> None:
        self.close()
        self.stderr_path = self.log_dir / f"worker-{self.target}-{self.starts}.log"
        self._stderr = open(self.stderr_path, "wb")
        env = dict(os.environ, PYTHONFAULTHANDLER="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   OPENBLAS_NUM_THREADS="1", PYTHONHASHSEED="0")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", self.target]
        if self.coverage:
            cmd.append("--coverage")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                     preexec_fn=self._limits, env=env, cwd=str(ROOT))
        self.starts += 1
        ans = self._answer(self.STARTUP_TIMEOUT_S)
        if not (isinstance(ans, dict) and ans.get("ready")):
            raise RuntimeError(f"the {self.target} fuzz worker did not start: {ans}; see {self.stderr_path}")

    def _answer(self, timeout: float):
        fd = self.proc.stdout
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return None
        line = fd.readline()
        if not line:
            return ""
        return json.loads(line)

    def _tail(self) -> str:
        try:
            self._stderr.flush()
            return self.stderr_path.read_bytes()[-3000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def run(self, spec: str, timeout: float = 10.0) -> dict:
        """One input: the target's answer, or ``hang`` / ``crash`` / ``memory`` when the worker fails.

        The worker is restarted after a hang or a death, so the next call starts clean.
        """
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        try:
            self.proc.stdin.write((json.dumps({"spec": spec}) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass
        ans = self._answer(timeout)
        if isinstance(ans, dict):
            return ans
        if ans is None:  # no answer in time
            self.kill()
            return {"status": "hang", "msg": f"no answer within {timeout:g} s"}
        rc = self.proc.wait()
        tail = self._tail()
        self.proc = None
        if rc < 0 and -rc == signal.SIGKILL or "MemoryError" in tail or "bad_alloc" in tail or \
                "Cannot allocate memory" in tail:
            status = "memory"
        else:
            status = "crash"
        name = signal.Signals(-rc).name if rc < 0 and -rc in signal.Signals._value2member_map_ else f"exit {rc}"
        return {"status": status, "exc": name, "msg": f"worker died ({name})", "where": name, "tb": tail}

    def kill(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()
            self.proc = None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()
        self.proc = None
        if getattr(self, "_stderr", None) is not None:
            self._stderr.close()
            self._stderr = None


# --------------------------------------------------------------------------- the campaign (parent)


def load_corpus_module():
    """tests/corpus.py (the seeds' writer), imported by path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("diffscreen_test_corpus", ROOT / "tests" / "corpus.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


class _Entry:
    __slots__ = ("data", "name", "origin", "picked")

    def __init__(self, data: bytes, name: str, origin: str):
        self.data, self.name, self.origin, self.picked = data, name, origin, 0


def _spec_for(path: Path, seed_name: str) -> str:
    return f"{path}:/data" if seed_name.endswith(":/data") else str(path)


def _file_suffix(seed_name: str) -> str:
    base = seed_name.split(":/", 1)[0]
    return base[base.index("."):] if "." in base else ""


def _signature(target: str, res: dict) -> str:
    return f"{target}|{res['status']}|{res.get('exc', '')}|{res.get('where', '')}"


class Campaign:
    """A fuzzing campaign over the targets (see the module notes)."""

    def __init__(self, *, seed: int, timeout: float, rlimit_bytes: int, crashes_dir: Path, work_dir: Path,
                 coverage: bool = True, targets=TARGETS, model_share: float = 0.25, log=print):
        self.rng = random.Random(seed)
        self.seed, self.timeout, self.coverage, self.targets = seed, timeout, coverage, tuple(targets)
        self.crashes_dir, self.work_dir, self.log = Path(crashes_dir), Path(work_dir), log
        self.model_share = model_share
        corpus = load_corpus_module()
        seeds_dir = self.work_dir / "seeds"
        self.queues: dict[str, list[_Entry]] = {t: [] for t in self.targets}
        if "reader" in self.targets:
            for name, spec in corpus.write_seeds(seeds_dir).items():
                data = Path(spec.split(":/", 1)[0] if name.endswith(":/data") else spec).read_bytes()
                self.queues["reader"].append(_Entry(data, name, "seed"))
        if "model" in self.targets:
            p = corpus.model_seed(seeds_dir)
            self.model_tensors, self.model_record = read_model_file(p)
            self.queues["model"].append(_Entry(Path(p).read_bytes(), "seed.safetensors", "seed"))
        self.workers = {t: Worker(t, rlimit_bytes=rlimit_bytes, coverage=coverage, log_dir=self.work_dir / "logs")
                        for t in self.targets}
        self.coverage_seen: dict[str, set] = {t: set() for t in self.targets}
        self.stats = {t: {"inputs": 0, "ok": 0, "errors": 0, "queue": len(self.queues[t]), "worker_starts": 0,
                          "slowest_s": 0.0, "slow": 0, **{f: 0 for f in FAILURES}} for t in self.targets}
        self.slow_s = timeout / 5  # an answer slower than this is kept for a look (not a failure)
        self.findings: dict[str, dict] = {}

    # -- one input ---------------------------------------------------------------------------

    def _mutant(self, target: str) -> tuple[bytes, _Entry, list]:
        q = self.queues[target]
        # favour entries picked least (new coverage first), but keep the seeds in play
        entry = min(self.rng.sample(q, min(4, len(q))), key=lambda e: e.picked)
        entry.picked += 1
        if target == "model" and self.rng.random() < 0.7:
            try:
                tensors, record = read_model_file_bytes(entry.data)
            except Exception:  # noqa: BLE001 - a mutated entry that no longer parses: mutate the seed instead
                tensors, record = self.model_tensors, self.model_record
            ops = random_model_ops(self.rng, n_paths=len(_json_paths(record)), n_tensors=len(tensors))
            t, md = mutate_model(tensors, record, ops)
            try:
                return write_model_bytes(t, md), entry, ops
            except Exception:  # noqa: BLE001 - safetensors refuses to write it: fall back to byte mutations
                pass
        ops = random_ops(self.rng)
        other = self.rng.choice(self.queues[target]).data if any(o[0] == "splice" for o in ops) else b""
        inner = compression_of(entry.name) is not None and self.rng.random() < 0.6
        try:
            data = mutate_file(entry.data, ops, name=entry.name, inner=inner, other=other)
        except (OSError, EOFError, ValueError, zlib.error):  # a mutated compressed entry: mutate its bytes
            data = apply_ops(entry.data, ops, other)
        if target == "model":  # keep byte mutations mostly in the JSON header, where the parsing is
            n = struct.unpack("<Q", entry.data[:8])[0] if len(entry.data) >= 8 else 0
            if 0 < n < len(entry.data) and self.rng.random() < 0.7:
                head_ops = [(o[0], o[1] * (n + 8) / max(len(entry.data), 1), *o[2:]) if o[0] in (
                    "bit", "byte", "int", "del", "dup", "ins") else o for o in ops]
                data = apply_ops(entry.data, head_ops, other)
        return data, entry, ops

    def step(self, target: str) -> dict:
        data, entry, ops = self._mutant(target)
        suffix = ".safetensors" if target == "model" else _file_suffix(entry.name)
        path = self.work_dir / f"input-{target}{suffix}"
        path.write_bytes(data)
        spec = _spec_for(path, entry.name) if target == "reader" else str(path)
        w = self.workers[target]
        starts = w.starts
        res = w.run(spec, self.timeout)
        st = self.stats[target]
        st["worker_starts"] += w.starts - starts
        st["inputs"] += 1
        st["slowest_s"] = max(st["slowest_s"], float(res.get("seconds", 0.0)))
        status = res["status"]
        if status in ("ok", "error") and float(res.get("seconds", 0.0)) > self.slow_s:
            st["slow"] += 1
            self._save(target, {**res, "status": "slow", "where": res.get("exc") or "ok",
                                "msg": f"{res.get('seconds')} s: {res.get('msg', '')}"}, data, suffix, entry)
        if status == "ok":
            st["ok"] += 1
        elif status == "error":
            st["errors"] += 1
        else:
            st[status] = st.get(status, 0) + 1
            self._save(target, res, data, suffix, entry)
        cov = res.get("cov") or []
        seen = self.coverage_seen[target]
        fresh = [c for c in cov if c not in seen]
        if fresh:
            seen.update(fresh)
            if status in ("ok", "error") and len(self.queues[target]) < 4000:
                self.queues[target].append(_Entry(data, entry.name, f"{entry.origin}+{len(fresh)}"))
                st["queue"] = len(self.queues[target])
        return res

    def _save(self, target, res, data, suffix, entry) -> None:
        sig = _signature(target, res)
        f = self.findings.get(sig)
        if f is None:
            digest = hashlib.sha256(data).hexdigest()[:12]
            self.crashes_dir.mkdir(parents=True, exist_ok=True)
            name = f"{target}-{res['status']}-{res.get('exc', 'x')}-{digest}{suffix}"
            (self.crashes_dir / name).write_bytes(data)
            spec_note = ":/data" if entry.name.endswith(":/data") else ""
            f = self.findings[sig] = {
                "target": target, "status": res["status"], "exception": res.get("exc"), "where": res.get("where"),
                "message": (res.get("msg") or "")[:300], "count": 0, "input": str(self.crashes_dir / name) + spec_note,
                "seed": entry.name, "traceback": (res.get("tb") or "")[-2000:]}
            (self.crashes_dir / (name + ".json")).write_text(json.dumps(f, indent=1))
            msg = json.dumps((res.get("msg") or "")[:150])[1:-1]
            self.log(f"  new {res['status']} in {target}: {res.get('exc')} at {res.get('where')}: {msg} -> {name}")
        f["count"] += 1

    # -- the run -----------------------------------------------------------------------------

    def run(self, seconds: float) -> dict:
        t0 = time.time()
        deadline = t0 + seconds
        for w in self.workers.values():
            w.start()
        # every seed as it is first: a seed that fails is a finding of its own
        for target in self.targets:
            for e in list(self.queues[target]):
                path = self.work_dir / f"seed-{target}{_file_suffix(e.name) if target == 'reader' else '.safetensors'}"
                path.write_bytes(e.data)
                res = self.workers[target].run(_spec_for(path, e.name) if target == "reader" else str(path),
                                               self.timeout)
                if res["status"] not in ("ok",):
                    self.log(f"  seed {e.name} does not read cleanly: {res['status']} {res.get('msg', '')[:200]}")
                self.coverage_seen[target].update(res.get("cov") or [])
        last_report = time.time()
        while time.time() < deadline:
            target = "model" if ("model" in self.targets and (len(self.targets) == 1 or
                                                             self.rng.random() < self.model_share)) else "reader"
            if target not in self.targets:
                target = self.targets[0]
            self.step(target)
            if time.time() - last_report > 60:
                last_report = time.time()
                self.log("  " + ", ".join(f"{t}: {s['inputs']} inputs, {sum(s[f] for f in FAILURES)} failures, "
                                          f"queue {s['queue']}" for t, s in self.stats.items()))
        for w in self.workers.values():
            w.close()
        return self.result(time.time() - t0)

    def result(self, elapsed: float) -> dict:
        totals = {k: sum(s[k] for s in self.stats.values()) for k in ("inputs", "ok", "errors", *FAILURES)}
        return {
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(elapsed, 1),
            "seed": self.seed,
            "timeout_s": self.timeout,
            "rlimit_as_bytes": self.workers[self.targets[0]].rlimit,
            "coverage_guided": self.coverage,
            "commit": _git_commit(),
            "python": platform.python_version(),
            "versions": _versions(),
            "totals": totals,
            "targets": self.stats,
            "coverage_edges": {t: len(s) for t, s in self.coverage_seen.items()},
            "findings": sorted(self.findings.values(), key=lambda f: -f["count"]),
        }


def read_model_file_bytes(data: bytes) -> tuple[dict, object]:
    from safetensors import safe_open
    from safetensors.numpy import load

    with tempfile.NamedTemporaryFile(suffix=".safetensors") as fh:
        fh.write(data)
        fh.flush()
        with safe_open(fh.name, framework="np") as f:
            record = json.loads(f.metadata()["diffscreen"])
    return load(data), record


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+local changes" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict:
    from importlib import metadata

    out = {}
    for pkg in ("diffscreen", "fabio", "h5py", "pycbf", "safetensors", "torch", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


# --------------------------------------------------------------------------- docs/reliability.md


def doc_section(res: dict) -> str:
    """The Markdown between the fuzz markers of docs/reliability.md."""
    t = res["totals"]
    mins = res["seconds"] / 60
    lines = [
        f"Last run: {res['date']} on commit {res.get('commit') or 'unknown'}, {mins:.1f} min, seed {res['seed']}, "
        f"per-input timeout {res['timeout_s']:g} s, RLIMIT_AS {res['rlimit_as_bytes'] / 2 ** 30:.0f} GiB "
        f"(`python bench/fuzz.py --minutes {max(round(mins), 1)} --out bench/results/fuzz.json`; "
        f"full record in `bench/results/fuzz.json`).",
        "",
        "| target | inputs | ok | clean errors | crashes | hangs | memory blow-ups | multi-line errors "
        "| accepted invalid | coverage edges |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in res["targets"].items():
        lines.append(f"| {name} | {s['inputs']} | {s['ok']} | {s['errors']} | {s['crash']} | {s['hang']} | "
                     f"{s['memory']} | {s['multiline']} | {s['accepted_invalid']} | "
                     f"{res['coverage_edges'].get(name, 0)} |")
    lines.append(f"| **all** | {t['inputs']} | {t['ok']} | {t['errors']} | {t['crash']} | {t['hang']} | "
                 f"{t['memory']} | {t['multiline']} | {t['accepted_invalid']} | |")
    lines.append("")
    slow = [f for f in res["findings"] if f["status"] == "slow"]
    bad = [f for f in res["findings"] if f["status"] != "slow"]
    if slow:
        n = sum(s.get("slow", 0) for s in res["targets"].values())
        lines.append(f"{n} input(s) answered correctly but in more than {res['timeout_s'] / 5:g} s (not failures; "
                     f"slowest {max(s['slowest_s'] for s in res['targets'].values()):.1f} s), kept in "
                     "`bench/results/fuzz-crashes/` as `*-slow-*`.")
        lines.append("")
    if bad:
        lines.append(f"{len(bad)} distinct finding(s); reproducing inputs in "
                     "`bench/results/fuzz-crashes/`:")
        lines.append("")
        for f in bad:
            what = f" `{f['exception']}`" if f.get("exception") else ""
            what += f" at `{f['where']}`" if f.get("where") else ""
            msg = json.dumps(f["message"][:160])[1:-1].replace("`", "'")  # one line, control bytes escaped
            lines.append(f"- {f['target']} {f['status']}{what} ({f['count']}x, from seed `{f['seed']}`): "
                         f"{msg}; input `{Path(f['input']).name}`")
    else:
        lines.append("No crash, hang, memory blow-up, multi-line error or invalid model accepted.")
    return "\n".join(lines)


DOC_SKELETON = """# Reliability

What diffscreen promises when it runs unattended for days, and how that is checked (issue 18).

## Bad inputs

`tests/corpus.py` writes a corpus of bad inputs (`python tests/corpus.py DIR` prints it): frame files
that are empty, truncated, corrupt, hostile or absurd; model files; label and scores files.
`tests/test_corpus.py` screens every bad frame file between good frames and checks that the run goes on
(exit 1), the good frames get the decisions they get alone, the bad file's frames are error rows naming
it, no row with a non-finite probability is labelled, summary.json is strict JSON, and no traceback is
printed; a bad model file is refused with one `ERROR:` line and exit 3, without running any code in it;
a bad label or scores file is refused with one `ERROR:` line and exit 2, or read correctly.

## Fuzzing

`bench/fuzz.py` fuzzes the readers (`diffscreen.io.open_source` and every frame read) and the model
loader (`diffscreen.models.load_model`) with coverage-guided mutations of small valid files of every
format, each target in a worker process with `RLIMIT_AS` and a per-input timeout.  A short run of the
same targets (hypothesis) is part of the tests: `tests/test_fuzz.py`.

{begin}
(not run yet: `python bench/fuzz.py --minutes 30 --out bench/results/fuzz.json`)
{end}
""".format(begin=DOC_BEGIN, end=DOC_END)


def update_doc(path: Path, section: str) -> None:
    """Rewrite the text between the fuzz markers (creating the file with a skeleton if needed)."""
    text = path.read_text() if path.exists() else DOC_SKELETON
    if DOC_BEGIN not in text or DOC_END not in text:
        text = text.rstrip("\n") + "\n\n## Fuzzing\n\n" + DOC_BEGIN + "\n" + DOC_END + "\n"
    i, j = text.index(DOC_BEGIN) + len(DOC_BEGIN), text.index(DOC_END)
    text = text[:i] + "\n" + section.strip("\n") + "\n" + text[j:]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- command line


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Coverage-guided fuzzing of diffscreen's readers and model loader.")
    ap.add_argument("--minutes", type=float, default=30.0, help="how long to fuzz (all targets together)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fuzz.json", help="JSON results")
    ap.add_argument("--crashes", type=Path, default=ROOT / "bench" / "results" / "fuzz-crashes",
                    help="where reproducing inputs go")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "reliability.md", help="the Markdown to update")
    ap.add_argument("--no-doc", action="store_true", help="do not update --doc")
    ap.add_argument("--seed", type=int, default=0, help="seed of the mutation sequence")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per input before it counts as a hang")
    ap.add_argument("--rlimit-gb", type=float, default=4.0, help="address-space limit of the workers (GiB)")
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated: reader,model")
    ap.add_argument("--model-share", type=float, default=0.25, help="fraction of inputs for the model target")
    ap.add_argument("--no-coverage", action="store_true", help="plain random mutation (faster per input)")
    ap.add_argument("--worker", choices=TARGETS, help=argparse.SUPPRESS)
    ap.add_argument("--coverage", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.coverage)
    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    bad = [t for t in targets if t not in TARGETS]
    if bad or not targets:
        ap.error(f"unknown target(s) {bad}; known: {', '.join(TARGETS)}")
    with tempfile.TemporaryDirectory(prefix="diffscreen-fuzz-") as work:
        camp = Campaign(seed=args.seed, timeout=args.timeout, rlimit_bytes=int(args.rlimit_gb * 2 ** 30),
                        crashes_dir=args.crashes, work_dir=Path(work), coverage=not args.no_coverage,
                        targets=targets, model_share=args.model_share)
        print(f"fuzzing {', '.join(targets)} for {args.minutes:g} min (seed {args.seed}, timeout {args.timeout:g} s, "
              f"RLIMIT_AS {args.rlimit_gb:g} GiB)", flush=True)
        try:
            res = camp.run(args.minutes * 60)
        finally:
            for w in camp.workers.values():
                w.kill()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    t = res["totals"]
    print(f"{t['inputs']} inputs: {t['ok']} ok, {t['errors']} clean errors, {t['crash']} crashes, {t['hang']} hangs, "
          f"{t['memory']} memory blow-ups, {t['multiline']} multi-line errors, {t['accepted_invalid']} invalid models "
          f"accepted; {len(res['findings'])} distinct findings -> {args.out}")
    if not args.no_doc:
        update_doc(args.doc, doc_section(res))
        print(f"updated the Fuzzing section of {args.doc}")
    return 0 if not any(t[f] for f in FAILURES) else 1


if __name__ == "__main__":
    sys.exit(main())
