"""The DECTRIS SIMPLON stream v2 protocol: receive frames from a detector's ZeroMQ stream, or play a run over it.

Protocol (DECTRIS, "Stream V2", github.com/dectris/documentation, ``stream_v2/README.md``
and ``cbor/dectris-compression-tag.md``; release 2022.1 and later)
---------------------------------------------------------------------------------------------
The detector control unit binds a ZeroMQ PUSH socket (port 31001 by
default); a client connects a PULL socket.  Each ZeroMQ message is one
CBOR map (RFC 8949) whose ``type`` is ``"start"`` (arm: the series
configuration), ``"image"`` (one exposure) or ``"end"`` (disarm).

CBOR tags decoded here:

=========  ==============================================================
tag 40     multi-dimensional array, row-major (RFC 8746 §3.1):
           ``[[dim0, dim1], typed array]``, ``dim0`` the slowest (rows)
tag 1040   the same, column-major
64-87      typed arrays (RFC 8746 §2): 64 uint8, 69 uint16 LE, 70 uint32
           LE, 77 int16 LE, 78 int32 LE, 85 float32 LE, ... (big-endian
           tags too)
tag 56500  DECTRIS compressed byte string ``[algorithm, modifier, bytes]``:
           ``"bslz4"`` (bitshuffle + LZ4, HDF5 framing; the modifier is
           the element size) and ``"lz4"`` (LZ4, HDF5 framing); equivalent
           to the decompressed byte string, e.g. inside a typed array
=========  ==============================================================

Both compressions are decoded (and, for :func:`send_run`, encoded) by the
bitshuffle and LZ4 HDF5 filters that ``hdf5plugin`` (already a dependency,
for CXI files) bundles: the stream's payload is an HDF5 chunk in exactly
that filter's framing (8-byte big-endian decompressed size, 4-byte block
size, then blocks), so it is written as a raw chunk of a one-chunk dataset
in an in-memory HDF5 file and read back through the filter.  Neither the
``bitshuffle`` nor the ``dectris-compression`` package installs here.

Fields read
-----------
``start``: ``series_id``, ``series_unique_id``, ``image_size_x`` /
``image_size_y`` (px), ``beam_center_x`` / ``beam_center_y`` (px, 0-based,
x fast scan), ``pixel_size_x`` (m), ``incident_wavelength`` (Å; else
``incident_energy``, eV), the sample-detector distance (``detector_distance``
in m where the detector sends it, else the z of ``detector_translation``,
m), ``detector_description``, ``saturation_value`` (counts), ``channels``,
``number_of_images``, ``pixel_mask`` (map channel -> 32-bit mask, nonzero
= bad; sent with ``header_detail = all``), ``user_data``.

``image``: ``series_id``, ``image_id``, ``data`` (map channel -> tag-40
array; the first channel of the start message's ``channels`` is screened),
``user_data``.

``end``: ``series_id``.

diffscreen extension (in the protocol's own ``user_data`` slots, ignored by
other clients): ``user_data["diffscreen"]`` of a start or image message may
hold ``source`` (the file the frames come from; the ``file`` column of
scores.csv) and, in an image message, ``frame`` (its index in that file) and
per-frame geometry overriding the start message's: ``beam_center_x``,
``beam_center_y`` (px), ``detector_distance`` (m), ``incident_wavelength``
(Å), ``pixel_size_x`` (m).  :func:`send_run` writes them, so a replayed run
is screened frame for frame as ``diffscreen screen`` screens its file.
Without them a frame is named ``series_<series_unique_id or series_id>``,
frame ``image_id``.

Pixels and mask: the frame's pixels keep their stored dtype until the
screening path reads them (:class:`diffscreen.io.simplon.StreamFrame`); the
mask is the start message's pixel mask OR what the detector flags as invalid
(:func:`~diffscreen.io.base.invalid_mask`: at or above ``saturation_value``,
and the all-ones value of the integer dtype).
"""

from __future__ import annotations

import io as _io
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from diffscreen.errors import ConfigError, FrameReadError
from diffscreen.io.base import invalid_mask
from diffscreen.io.frame import Frame, FrameMeta
from diffscreen.io.limits import max_frame_pixels

__all__ = ["TAG_MULTIDIM", "TAG_COMPRESSED", "TYPED_ARRAY_DTYPES", "COMPRESSIONS", "StartInfo", "StreamFrame",
           "SimplonReceiver", "decode", "resolve", "decompress", "compress", "encode_start", "encode_image",
           "encode_end", "send_run", "DEFAULT_PORT"]

#: The port DECTRIS detectors push stream v2 on.
DEFAULT_PORT = 31001
#: RFC 8746 multi-dimensional array, row-major (and column-major).
TAG_MULTIDIM, TAG_MULTIDIM_COLUMN_MAJOR = 40, 1040
#: DECTRIS compressed byte string.
TAG_COMPRESSED = 56500
#: RFC 8746 typed-array tags and their numpy dtypes.
TYPED_ARRAY_DTYPES = {64: "u1", 65: ">u2", 66: ">u4", 67: ">u8", 68: "u1", 69: "<u2", 70: "<u4", 71: "<u8",
                      72: "i1", 73: ">i2", 74: ">i4", 75: ">i8", 77: "<i2", 78: "<i4", 79: "<i8",
                      80: ">f2", 81: ">f4", 82: ">f8", 84: "<f2", 85: "<f4", 86: "<f8"}
_TAG_OF_DTYPE = {"u1": 64, "<u2": 69, "<u4": 70, "<u8": 71, "i1": 72, "<i2": 77, "<i4": 78, "<i8": 79,
                 "<f2": 84, "<f4": 85, "<f8": 86}
#: Compressions of image data this module decodes and encodes ("none": plain typed arrays).
COMPRESSIONS = ("bslz4", "lz4", "none")
_HC_EV_A = 12398.4198


# --------------------------------------------------------------------------- compression


class _Codec:
    """One-chunk datasets in in-memory HDF5 files, one per (filter, element size, length): the hdf5plugin filters
    applied to a raw chunk.  A lock serialises their use (HDF5 holds one global lock anyway)."""

    def __init__(self):
        self._sets, self._lock = {}, threading.Lock()

    def _dataset(self, algorithm: str, elem_size: int, n_bytes: int):
        import h5py
        import hdf5plugin

        key = (algorithm, elem_size, n_bytes)
        if key not in self._sets:
            if len(self._sets) > 16:  # a stream of ever-new sizes must not keep every file
                for f, _ in self._sets.values():
                    f.close()
                self._sets.clear()
            filt = hdf5plugin.Bitshuffle(cname="lz4") if algorithm == "bslz4" else hdf5plugin.LZ4()
            f = h5py.File(_io.BytesIO(), "w")
            n = n_bytes // elem_size
            ds = f.create_dataset("d", shape=(n,), chunks=(n,), dtype=f"u{elem_size}", **filt)
            self._sets[key] = (f, ds)
        return self._sets[key][1]

    def decompress(self, algorithm: str, elem_size: int, payload: bytes) -> memoryview:
        from h5py import h5s

        if len(payload) < 12:
            raise ValueError(f"{algorithm} payload of {len(payload)} bytes is shorter than its 12-byte header")
        n_bytes = int.from_bytes(payload[:8], "big")
        limit = max_frame_pixels() * 8
        if n_bytes > limit:
            raise ValueError(f"{algorithm} header states {n_bytes:,} decompressed bytes, more than the "
                             f"{limit:,} of --max-frame-pixels")
        if elem_size < 1 or n_bytes % elem_size:
            raise ValueError(f"{algorithm}: {n_bytes} bytes is no whole number of {elem_size}-byte elements")
        if n_bytes == 0:
            return memoryview(b"")
        out = np.empty(n_bytes // elem_size, dtype=f"u{elem_size}")
        with self._lock:
            ds = self._dataset(algorithm, elem_size, n_bytes)
            ds.id.write_direct_chunk((0,), bytes(payload))
            ds.id.read(h5s.ALL, h5s.ALL, out)  # straight into ``out``: no array made and copied again
        return memoryview(out).cast("B")

    def compress(self, algorithm: str, elem_size: int, data: bytes) -> bytes:
        if not data:
            return (0).to_bytes(8, "big") + (0).to_bytes(4, "big")
        with self._lock:
            ds = self._dataset(algorithm, elem_size, len(data))
            ds[...] = np.frombuffer(data, dtype=f"u{elem_size}")
            return bytes(ds.id.read_direct_chunk((0,))[1])


_CODEC = _Codec()


def decompress(algorithm: str, modifier, payload: bytes) -> bytes | memoryview:
    """The bytes a DECTRIS compressed byte string (tag 56500) stands for.

    Parameters
    ----------
    algorithm : {"bslz4", "lz4", "none"}
    modifier : int
        ``"bslz4"``: the bitshuffle element size in bytes (1, 2, 4, 8); unused otherwise.
    payload : bytes
        The compressed bytes, HDF5 filter framing.

    Returns
    -------
    bytes or memoryview
        At most ``8 * max_frame_pixels()`` bytes: ``"none"`` gives bytes; the
        compressed forms a writable byte view of the decompressed array, which
        ``np.frombuffer`` takes without a copy.

    Raises
    ------
    ValueError
        Unknown algorithm, a damaged payload, or a header that states more bytes than allowed.
    """
    if algorithm == "none":
        return bytes(payload)
    if algorithm not in ("bslz4", "lz4"):
        raise ValueError(f"unknown compression {algorithm!r} (diffscreen decodes bslz4, lz4 and none)")
    elem = int(modifier) if algorithm == "bslz4" else 1
    try:
        return _CODEC.decompress(algorithm, elem, payload)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - HDF5 reports a damaged chunk as OSError/RuntimeError
        raise ValueError(f"damaged {algorithm} data ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None


def compress(data: np.ndarray, algorithm: str):
    """A typed array's bytes as a tag-56500 compressed byte string (or the plain bytes for ``"none"``).

    Parameters
    ----------
    data : ndarray
        Little-endian, C-contiguous.
    algorithm : {"bslz4", "lz4", "none"}

    Returns
    -------
    bytes or cbor2.CBORTag
    """
    import cbor2

    raw = np.ascontiguousarray(data).tobytes()
    if algorithm == "none":
        return raw
    if algorithm not in ("bslz4", "lz4"):
        raise ConfigError(f"unknown compression {algorithm!r}; use one of {', '.join(COMPRESSIONS)}")
    elem = data.dtype.itemsize if algorithm == "bslz4" else 1
    return cbor2.CBORTag(TAG_COMPRESSED, ["bslz4" if algorithm == "bslz4" else "lz4",
                                          elem if algorithm == "bslz4" else 0,
                                          _CODEC.compress(algorithm, elem, raw)])


# --------------------------------------------------------------------------- decoding


def decode(buf: bytes) -> dict:
    """One stream v2 message as a map, tags left undecoded (cheap: nothing is decompressed).

    Parameters
    ----------
    buf : bytes
        One ZeroMQ message.

    Returns
    -------
    dict
        Text keys; ``type`` is ``"start"``, ``"image"`` or ``"end"``; arrays
        stay ``cbor2.CBORTag`` objects until :func:`resolve`.

    Raises
    ------
    ValueError
        Not CBOR, not a map, or without a known ``type``.
    """
    import cbor2

    try:
        msg = cbor2.loads(buf)
    except Exception as exc:  # noqa: BLE001 - cbor2 raises its own decode errors (ValueError subclasses mostly)
        raise ValueError(f"not a CBOR message ({type(exc).__name__}: {exc})") from None
    if not isinstance(msg, dict) or msg.get("type") not in ("start", "image", "end"):
        kind = msg.get("type") if isinstance(msg, dict) else type(msg).__name__
        raise ValueError(f"not a stream v2 message (type {kind!r}; expected start, image or end)")
    return msg


def resolve(obj):
    """Decode the CBOR tags of a message item: compressed byte strings, typed and multi-dimensional arrays.

    Parameters
    ----------
    obj : any
        An item of :func:`decode`'s map.

    Returns
    -------
    any
        The same with tag 56500 decompressed to bytes (or a byte view), typed arrays as 1-D
        numpy arrays and tag 40 / 1040 as N-D numpy arrays; maps and arrays
        resolved item by item.

    Raises
    ------
    ValueError
        A damaged compressed string, a typed array whose length is not a
        whole number of elements, dimensions that do not match the data.
    """
    import cbor2

    if isinstance(obj, cbor2.CBORTag):
        tag, v = obj.tag, obj.value
        if tag == TAG_COMPRESSED:
            if not isinstance(v, (list, tuple)) or len(v) != 3:
                raise ValueError("tag 56500 must hold [algorithm, modifier, bytes]")
            return decompress(str(v[0]), v[1], resolve(v[2]))
        if tag in TYPED_ARRAY_DTYPES:
            raw = resolve(v)
            if not isinstance(raw, (bytes, bytearray, memoryview)):
                raise ValueError(f"typed array tag {tag} must hold a byte string")
            dt = np.dtype(TYPED_ARRAY_DTYPES[tag])
            if len(raw) % dt.itemsize:
                raise ValueError(f"typed array of {len(raw)} bytes is no whole number of {dt.itemsize}-byte items")
            return np.frombuffer(raw, dtype=dt)
        if tag in (TAG_MULTIDIM, TAG_MULTIDIM_COLUMN_MAJOR):
            dims, contents = v
            arr = resolve(contents)
            arr = np.asarray(arr) if not isinstance(arr, np.ndarray) else arr
            dims = [int(d) for d in dims]
            if int(np.prod(dims)) != arr.size:
                raise ValueError(f"array dimensions {dims} do not match its {arr.size} elements")
            return arr.reshape(dims, order="F" if tag == TAG_MULTIDIM_COLUMN_MAJOR else "C")
        return cbor2.CBORTag(tag, resolve(v))
    if isinstance(obj, dict):
        return {k: resolve(x) for k, x in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [resolve(x) for x in obj]
    return obj


class _Tag(tuple):
    """A CBOR tag as ``(tag, value)``, for pickling (:class:`StreamFrame` in a worker process)."""


def _untag(obj):
    """``obj`` with every ``cbor2.CBORTag`` replaced by a :class:`_Tag` (maps and arrays item by item)."""
    import cbor2

    if isinstance(obj, cbor2.CBORTag):
        return _Tag((obj.tag, _untag(obj.value)))
    if isinstance(obj, dict):
        return {k: _untag(x) for k, x in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_untag(x) for x in obj)
    return obj


def _retag(obj):
    """The inverse of :func:`_untag`."""
    import cbor2

    if isinstance(obj, _Tag):
        return cbor2.CBORTag(obj[0], _retag(obj[1]))
    if isinstance(obj, dict):
        return {k: _retag(x) for k, x in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_retag(x) for x in obj)
    return obj


def _float(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def _ours(msg: dict) -> dict:
    ud = msg.get("user_data")
    d = ud.get("diffscreen") if isinstance(ud, dict) else None
    return d if isinstance(d, dict) else {}


@dataclass
class StartInfo:
    """What a start message says about the series: size, geometry, mask.

    Attributes
    ----------
    series_id : int
    series_unique_id : str
    shape : (int, int)
        ``(image_size_y, image_size_x)``, pixels.
    detector : str or None
    pixel_size_mm : float or None
    beam_centre_px : (float, float) or None
        ``(x, y)``, fast then slow scan, 0-based pixels.
    distance_mm : float or None
    wavelength_A : float or None
    saturation : float or None
        Largest valid count (``saturation_value``).
    mask : (H, W) bool ndarray or None
        True = bad (nonzero ``pixel_mask`` of the screened channel).
    channel : str or None
        The channel screened (first of ``channels``).
    number_of_images : int or None
    source : str or None
        ``user_data["diffscreen"]["source"]``, when a replay sent it.
    """

    series_id: int = 0
    series_unique_id: str = ""
    shape: tuple = (0, 0)
    detector: str | None = None
    pixel_size_mm: float | None = None
    beam_centre_px: tuple | None = None
    distance_mm: float | None = None
    wavelength_A: float | None = None
    saturation: float | None = None
    mask: np.ndarray | None = None
    channel: str | None = None
    number_of_images: int | None = None
    source: str | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_message(cls, msg: dict) -> "StartInfo":
        """Read a start message (:func:`decode`'s map).

        Raises
        ------
        ValueError
            A damaged pixel mask, or one whose shape differs from the image size.
        """
        channels = msg.get("channels") or []
        channel = str(channels[0]) if channels else None
        W, H = int(msg.get("image_size_x") or 0), int(msg.get("image_size_y") or 0)
        bx, by = _float(msg.get("beam_center_x")), _float(msg.get("beam_center_y"))
        px = _float(msg.get("pixel_size_x"))
        dist = _float(msg.get("detector_distance"))
        if dist is None:
            tr = msg.get("detector_translation")
            dist = _float(tr[2]) if isinstance(tr, (list, tuple)) and len(tr) == 3 else None
        wl = _float(msg.get("incident_wavelength"))
        if not wl:
            e = _float(msg.get("incident_energy"))
            wl = _HC_EV_A / e if e else None
        mask = None
        masks = msg.get("pixel_mask")
        if isinstance(masks, dict) and masks:
            m = resolve(masks.get(channel, next(iter(masks.values()))))
            m = np.asarray(m)
            if m.ndim != 2 or (H and W and m.shape != (H, W)):
                raise ValueError(f"pixel mask of shape {m.shape} does not match the {H}x{W} images")
            mask = m != 0
            H, W = m.shape
        sat = _float(msg.get("saturation_value"))
        n = msg.get("number_of_images")
        return cls(series_id=int(msg.get("series_id") or 0), series_unique_id=str(msg.get("series_unique_id") or ""),
                   shape=(H, W), detector=msg.get("detector_description") or None,
                   pixel_size_mm=None if px is None else px * 1e3,
                   beam_centre_px=None if bx is None or by is None else (bx, by),
                   distance_mm=None if dist is None else dist * 1e3, wavelength_A=wl, saturation=sat, mask=mask,
                   channel=channel, number_of_images=int(n) if isinstance(n, int) else None,
                   source=_ours(msg).get("source"))

    @property
    def name(self) -> str:
        """The ``file`` column of this series' frames: the replayed file, else ``series_<id>``."""
        return str(self.source) if self.source else f"series_{self.series_unique_id or self.series_id}"


class StreamFrame:
    """One image message of a series, decoded only when its pixels are needed.

    Attributes
    ----------
    name : str
        The ``file`` column of scores.csv (:attr:`StartInfo.name`, or the
        image's own ``user_data["diffscreen"]["source"]``).
    index : int
        The frame: ``user_data["diffscreen"]["frame"]``, else ``image_id``.
    nbytes : int
        Size of the message as received (what the loop's buffer holds).
    """

    def __init__(self, msg: dict, start: StartInfo, nbytes: int = 0):
        self.msg, self.start, self.nbytes = msg, start, nbytes
        ours = _ours(msg)
        self.name = str(ours.get("source") or start.name)
        idx = ours.get("frame", msg.get("image_id", 0))
        self.index = int(idx) if isinstance(idx, int) else 0

    def __getstate__(self) -> dict:
        # worker processes (diffscreen.live.workers) receive the message as received; cbor2's tags do not pickle
        return {**self.__dict__, "msg": _untag(self.msg)}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, msg=_retag(state["msg"]))

    def decode(self) -> tuple[np.ndarray, np.ndarray, FrameMeta]:
        """The frame's pixels in their stored dtype, its mask and its metadata.

        Returns
        -------
        raw : (H, W) ndarray
            As sent (uint8/16/32, int32, float32, ...).
        bad : (H, W) bool ndarray
            True = bad: the start message's pixel mask OR the invalid values.
        meta : FrameMeta
            ``source = name``, ``index``, the start message's geometry with
            the image's own ``user_data`` geometry over it.

        Raises
        ------
        FrameReadError
            No image data, damaged compression, a shape that differs from the
            start message's, more pixels than ``max_frame_pixels``.
        """
        s = self.start
        try:
            data = self.msg.get("data")
            if not isinstance(data, dict) or not data:
                raise ValueError("the image message holds no data")
            item = data.get(s.channel, next(iter(data.values()))) if s.channel else next(iter(data.values()))
            raw = resolve(item)
            if not isinstance(raw, np.ndarray) or raw.ndim != 2:
                raise ValueError(f"image data is not a 2-D array (got {getattr(raw, 'shape', type(raw).__name__)})")
        except ValueError as exc:
            raise FrameReadError(f"cannot decode the image message ({exc})", path=self.name, frame=self.index) from None
        if raw.size > max_frame_pixels():
            raise FrameReadError(f"the {raw.shape[0]}x{raw.shape[1]} image has more pixels than --max-frame-pixels "
                                 f"({max_frame_pixels():,})", path=self.name, frame=self.index)
        if s.mask is not None and s.mask.shape != raw.shape:
            raise FrameReadError(f"the {raw.shape[0]}x{raw.shape[1]} image does not match the start message's "
                                 f"{s.mask.shape[0]}x{s.mask.shape[1]} pixel mask", path=self.name, frame=self.index)
        if raw.dtype.byteorder == ">":
            raw = raw.astype(raw.dtype.newbyteorder("="))
        bad = invalid_mask(raw, s.saturation)
        if s.mask is not None:
            bad |= s.mask
        return raw, bad, self.meta()

    def meta(self) -> FrameMeta:
        """Geometry of the frame (start message, overridden by the image's ``user_data``)."""
        s, ours = self.start, _ours(self.msg)
        bc = s.beam_centre_px
        bx, by = _float(ours.get("beam_center_x")), _float(ours.get("beam_center_y"))
        if bx is not None and by is not None:
            bc = (bx, by)
        dist = _float(ours.get("detector_distance"))
        px = _float(ours.get("pixel_size_x"))
        wl = _float(ours.get("incident_wavelength"))
        return FrameMeta(source=self.name, index=self.index, detector=s.detector,
                         pixel_size_mm=s.pixel_size_mm if px is None else px * 1e3, beam_centre_px=bc,
                         distance_mm=s.distance_mm if dist is None else dist * 1e3,
                         wavelength_A=s.wavelength_A if wl is None else wl,
                         extra={"format": "simplon-stream2", "series_id": s.series_id,
                                "image_id": self.msg.get("image_id")})

    def frame(self) -> Frame:
        """The frame as every reader gives it: float32 pixels, mask, meta."""
        raw, bad, meta = self.decode()
        return Frame(raw.astype(np.float32), bad, meta)


class SimplonReceiver:
    """A ZeroMQ PULL client of a stream v2 server.

    Parameters
    ----------
    endpoint : str
        ``tcp://HOST:PORT`` (the detector's port is 31001).
    rcvhwm : int
        Messages ZeroMQ may queue on this side before the sender waits.

    Notes
    -----
    :meth:`poll` returns one event at a time: ``("start", StartInfo)``,
    ``("image", StreamFrame)`` (nothing decompressed yet), ``("end", dict)``,
    ``("bad", message)`` for a message that cannot be understood (an image
    before any start, or not stream v2), or None when nothing arrived within
    the timeout.  Use it as a context manager.
    """

    def __init__(self, endpoint: str, *, rcvhwm: int = 1000):
        import zmq

        if not str(endpoint).startswith(("tcp://", "ipc://", "inproc://")):
            raise ConfigError(f"{endpoint}: a stream endpoint looks like tcp://HOST:PORT")
        self.endpoint = endpoint
        self._ctx = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.PULL)
        self._sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        try:
            self._sock.connect(endpoint)
        except zmq.ZMQError as exc:
            self._sock.close()
            raise ConfigError(f"{endpoint}: cannot connect ({exc})") from None
        self.start: StartInfo | None = None

    def poll(self, timeout_s: float = 0.1):
        """The next event, or None after ``timeout_s`` without a message (see the class notes)."""
        import zmq

        if not self._sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            return None
        buf = self._sock.recv(copy=True)
        try:
            msg = decode(buf)
            kind = msg["type"]
            if kind == "start":
                self.start = StartInfo.from_message(msg)
                return "start", self.start
            if kind == "end":
                return "end", msg
            if self.start is None:
                return "bad", f"image {msg.get('image_id')} arrived before any start message"
            return "image", StreamFrame(msg, self.start, len(buf))
        except ValueError as exc:
            return "bad", str(exc)

    def close(self) -> None:
        self._sock.close(linger=0)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------- encoding and the sender


def _typed(arr: np.ndarray, compression: str):
    import cbor2

    arr = np.ascontiguousarray(arr)
    dt = arr.dtype.newbyteorder("<") if arr.dtype.itemsize > 1 else arr.dtype
    arr = arr.astype(dt, copy=False)
    key = dt.str.replace("|", "")
    if key not in _TAG_OF_DTYPE:
        raise ConfigError(f"cannot send pixels of dtype {arr.dtype} over stream v2")
    return cbor2.CBORTag(TAG_MULTIDIM, [list(arr.shape), cbor2.CBORTag(_TAG_OF_DTYPE[key], compress(arr, compression))])


def encode_start(*, series_id: int, shape, meta: FrameMeta | None = None, mask=None, n_images: int | None = None,
                 saturation=None, source: str | None = None, channel: str = "threshold_1",
                 compression: str = "bslz4") -> bytes:
    """A start message.

    Parameters
    ----------
    series_id : int
    shape : (int, int)
        ``(H, W)`` of the images.
    meta : FrameMeta, optional
        Geometry of the series (e.g. of its first frame).
    mask : (H, W) bool ndarray, optional
        True = bad; sent as a uint32 pixel mask (1 = bad).
    n_images : int, optional
    saturation : float, optional
    source : str, optional
        Written to ``user_data["diffscreen"]["source"]``.
    channel : str
    compression : str
        For the mask.

    Returns
    -------
    bytes
    """
    import cbor2

    meta = meta or FrameMeta(source="")
    H, W = int(shape[0]), int(shape[1])
    msg = {"type": "start", "series_id": int(series_id), "series_unique_id": f"diffscreen-{series_id}",
           "channels": [channel], "image_size_x": W, "image_size_y": H,
           "detector_description": meta.detector or "unknown", "pixel_mask_enabled": mask is not None}
    if meta.beam_centre_px:
        msg["beam_center_x"], msg["beam_center_y"] = float(meta.beam_centre_px[0]), float(meta.beam_centre_px[1])
    if meta.pixel_size_mm:
        msg["pixel_size_x"] = msg["pixel_size_y"] = meta.pixel_size_mm * 1e-3
    if meta.distance_mm:
        msg["detector_translation"] = [0.0, 0.0, meta.distance_mm * 1e-3]
        msg["detector_distance"] = meta.distance_mm * 1e-3
    if meta.wavelength_A and np.isfinite(meta.wavelength_A):
        msg["incident_wavelength"] = float(meta.wavelength_A)
        msg["incident_energy"] = _HC_EV_A / float(meta.wavelength_A)
    if n_images is not None:
        msg["number_of_images"] = int(n_images)
    if saturation is not None:
        msg["saturation_value"] = int(saturation)
    if mask is not None:
        msg["pixel_mask"] = {channel: _typed(np.asarray(mask).astype("<u4"), compression)}
    if source is not None:
        msg["user_data"] = {"diffscreen": {"source": str(source)}}
    return cbor2.dumps(msg)


def encode_image(raw: np.ndarray, *, series_id: int, image_id: int, meta: FrameMeta | None = None,
                 source: str | None = None, frame: int | None = None, channel: str = "threshold_1",
                 compression: str = "bslz4") -> bytes:
    """An image message of ``raw`` (H, W) pixels, with the frame's geometry in ``user_data["diffscreen"]``.

    Parameters
    ----------
    raw : (H, W) ndarray
        Pixels in their stored dtype (integers or float32).
    series_id, image_id : int
    meta : FrameMeta, optional
        Per-frame geometry (beam centre, distance, wavelength, pixel size).
    source : str, optional
        The file the frame comes from; ``frame`` its index there.
    channel : str
    compression : {"bslz4", "lz4", "none"}

    Returns
    -------
    bytes
    """
    import cbor2

    ours = {}
    if source is not None:
        ours["source"] = str(source)
    if frame is not None:
        ours["frame"] = int(frame)
    if meta is not None:
        if meta.beam_centre_px:
            ours["beam_center_x"], ours["beam_center_y"] = map(float, meta.beam_centre_px)
        if meta.distance_mm:
            ours["detector_distance"] = meta.distance_mm * 1e-3
        if meta.wavelength_A and np.isfinite(meta.wavelength_A):
            ours["incident_wavelength"] = float(meta.wavelength_A)
        if meta.pixel_size_mm:
            ours["pixel_size_x"] = meta.pixel_size_mm * 1e-3
    msg = {"type": "image", "series_id": int(series_id), "series_unique_id": f"diffscreen-{series_id}",
           "image_id": int(image_id), "data": {channel: _typed(raw, compression)}}
    if ours:
        msg["user_data"] = {"diffscreen": ours}
    return cbor2.dumps(msg)


def encode_end(series_id: int) -> bytes:
    """An end message."""
    import cbor2

    return cbor2.dumps({"type": "end", "series_id": int(series_id), "series_unique_id": f"diffscreen-{series_id}"})


def _raw_frame(src, i: int):
    """Pixels of frame ``i`` in the file's dtype (a window reader's whole-frame window), its mask and meta."""
    fr_meta = src.read_meta(i)
    if getattr(src, "reads_window", False):
        H, W = src.frame_shape(i)
        raw, bad = src.read_region(i, (0, H), (0, W))
        return np.array(raw), np.array(bad), fr_meta
    fr = src.read(i)
    return fr.data, fr.mask, fr.meta


#: Seconds :func:`send_run` waits, after its last message, for a receiver to take the messages still queued.
_LINGER_S = 120.0


def send_run(spec, endpoint: str, *, rate: float | None = None, compression: str = "bslz4", series_id: int = 1,
             count: int | None = None, name: str | None = None, wait_s: float = 30.0, progress=None) -> dict:
    """Play a run's frames over stream v2 (a ZeroMQ PUSH socket bound at ``endpoint``), at a chosen frame rate.

    Every message is encoded before the first is sent (so the rate does not
    depend on how fast the file is read and compressed): memory holds the
    whole compressed run.

    Parameters
    ----------
    spec : str
        A file any reader opens (a CXI run from ``diffscreen simulate``, ...).
    endpoint : str
        ``tcp://*:PORT`` or ``tcp://127.0.0.1:PORT`` to bind.
    rate : float, optional
        Frames per second; None: as fast as the receiver takes them.
    compression : {"bslz4", "lz4", "none"}
    series_id : int
    count : int, optional
        Frames to send, cycling through the run (frame ``k`` of the stream is
        frame ``k % len(run)`` of the file, named frame ``k``); default: the
        run once.
    name : str, optional
        The ``source`` sent in ``user_data`` (the ``file`` column of the
        receiver's scores.csv); default ``spec``.
    wait_s : float
        Seconds to wait for a receiver to connect before the first message
        (a PUSH socket holds messages until one does).
    progress : callable, optional
        ``progress(total=None, advance=None)``.

    Returns
    -------
    dict
        ``frames`` sent, ``seconds`` from the first image to the end message,
        ``rate`` achieved (frames/s), ``late`` (frames sent more than one
        frame period behind schedule).

    Raises
    ------
    FrameReadError
        The run cannot be read.
    ConfigError
        Bad rate, compression or endpoint, or no receiver connected within ``wait_s``.
    """
    import zmq

    from diffscreen.io.sources import open_source

    if rate is not None and not rate > 0:
        raise ConfigError(f"--rate must be > 0 frames/s, got {rate}")
    if compression not in COMPRESSIONS:
        raise ConfigError(f"unknown compression {compression!r}; use one of {', '.join(COMPRESSIONS)}")
    name = str(spec) if name is None else name
    with open_source(spec) as src:
        n_run = len(src)
        if n_run == 0:
            raise FrameReadError("the file holds no frames", path=spec)
        frames = [_raw_frame(src, i) for i in range(n_run)]
    raw0, bad0, meta0 = frames[0]
    static = bad0 & ~invalid_mask(raw0)  # the detector mask, without frame 0's own invalid values
    total = n_run if count is None else int(count)
    images = [encode_image(raw, series_id=series_id, image_id=i, meta=meta, source=name, frame=i,
                           compression=compression) for i, (raw, _, meta) in enumerate(frames)]
    del frames
    # a context of its own, terminated here: the queued messages are delivered before this returns (left to
    # the interpreter's exit, the zero-copy messages' teardown can crash it and lose the queue's tail)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.LINGER, int(_LINGER_S * 1000))
    try:
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise ConfigError(f"{endpoint}: cannot bind ({exc})") from None
        if not sock.poll(int(wait_s * 1000), zmq.POLLOUT):
            raise ConfigError(f"{endpoint}: no receiver connected within {wait_s:g} s")
        sock.send(encode_start(series_id=series_id, shape=raw0.shape, meta=meta0, mask=static, n_images=total,
                               source=name, compression=compression))
        if progress:
            progress(total=total)
        t0 = time.perf_counter()
        late = 0
        for k in range(total):
            if rate is not None:
                due = t0 + k / rate
                now = time.perf_counter()
                if due > now:
                    time.sleep(due - now)
                elif now - due > 1.0 / rate:
                    late += 1
            if k < n_run:
                sock.send(images[k], copy=False)
            else:  # a cycled frame: its own index, the same pixels
                raw_msg = _reindex(images[k % n_run], k)
                sock.send(raw_msg, copy=False)
            if progress:
                progress(advance=1)
        dt = time.perf_counter() - t0
        sock.send(encode_end(series_id))
    finally:
        sock.close()
        ctx.term()  # waits until every queued message is delivered, at most _LINGER_S after the last
    return {"frames": total, "seconds": dt, "rate": total / dt if dt > 0 else float("inf"), "late": late}


def _reindex(buf: bytes, k: int) -> bytes:
    """An encoded image message with ``image_id`` and ``user_data.diffscreen.frame`` set to ``k``."""
    import cbor2

    msg = cbor2.loads(buf)
    msg["image_id"] = k
    msg.setdefault("user_data", {}).setdefault("diffscreen", {})["frame"] = k
    return cbor2.dumps(msg)
