"""Writing frames in the CXI layout (Maia 2012), readable by CrystFEL and Cheetah tools.

Layout written by :class:`CXIWriter` (one ``entry_k`` per distinct frame shape)::

    /entry_k/data_1/data                          (N, H, W)  frames (ADU), bitshuffle-LZ4
    /entry_k/data_1/mask                          (N, H, W) uint8, nonzero = bad   [mask_mode="per_frame"]
    /entry_k/instrument_1/detector_1/mask         (H, W) uint16, nonzero = bad     [mask_mode="static"]
    /entry_k/instrument_1/detector_1/description  detector name (str)
    /entry_k/instrument_1/detector_1/distance     (N,) float64, m        (NaN = unknown)
    /entry_k/instrument_1/detector_1/x_pixel_size (N,) float64, m
    /entry_k/instrument_1/detector_1/y_pixel_size (N,) float64, m
    /entry_k/instrument_1/detector_1/beam_center_x (N,) float64, px (fast scan; diffscreen extension)
    /entry_k/instrument_1/detector_1/beam_center_y (N,) float64, px (slow scan; diffscreen extension)
    /entry_k/instrument_1/source_1/energy         (N,) float64, J        (NaN = unknown)
    /entry_k/result_1/source_file                 (N,) str   file each frame came from
    /entry_k/result_1/source_frame                (N,) int64 0-based frame index in that file
    /entry_k/result_1/label                       (N,) int8  index into attribute ``class_names``, -1 = none
    /entry_k/result_1/probabilities               (N, C) float32 class probabilities (when given)
    /entry_k/result_1/n_spots                     (N,) int32 detectable Bragg spots (when given)
    /entry_k/result_1/nPeaks, peakXPosRaw, peakYPosRaw, peakTotalIntensity, peakSNR
                                                  Cheetah/CrystFEL peak list (when given)

CrystFEL reads the peaks with ``peak_list = /entry_1/result_1`` and
``peak_list_type = cxi``.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from diffscreen.io.atomic import _tmp_name
from diffscreen.io.outdir import check_free_space
from diffscreen.io.frame import CLASS_NAMES, FrameMeta

__all__ = ["CXIWriter", "EV_TO_J", "compression_options", "merge_cxi"]

#: 1 eV in J (CXI stores photon energy in J).
EV_TO_J = 1.602176634e-19
_HC_EV_A = 12398.4198


def compression_options(name: str | None) -> dict:
    """h5py dataset keyword arguments for a compression name.

    Parameters
    ----------
    name : {"bitshuffle-lz4", "gzip", "lzf", None}

    Returns
    -------
    dict
        Keyword arguments for :meth:`h5py.Group.create_dataset`.
    """
    if name is None or name == "none":
        return {}
    if name == "bitshuffle-lz4":
        import hdf5plugin

        return dict(hdf5plugin.Bitshuffle(cname="lz4"))
    if name == "gzip":
        return {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    if name == "lzf":
        return {"compression": "lzf", "shuffle": True}
    raise ValueError(f"unknown compression {name!r}; use bitshuffle-lz4, gzip, lzf or none")


class _Entry:
    """One ``/entry_k`` group holding frames of one shape (internal)."""

    def __init__(self, h5: h5py.File, name: str, shape, dtype, writer: "CXIWriter"):
        self.g = h5.create_group(name)
        self.n = 0
        self.shape = tuple(shape)
        w = writer
        comp = compression_options(w.compression)
        H, W = self.shape
        self.data = self.g.create_dataset(
            "data_1/data", shape=(0, H, W), maxshape=(None, H, W), chunks=(1, H, W), dtype=dtype, **comp
        )
        self.g["data_1"].attrs["axes"] = "experiment_identifier:y:x"
        det = self.g.create_group("instrument_1/detector_1")
        self.det = det
        self.mask = None
        if w.mask_mode == "per_frame":
            self.mask = self.g.create_dataset(
                "data_1/mask", shape=(0, H, W), maxshape=(None, H, W), chunks=(1, H, W), dtype="u1", **comp
            )
        self.static_mask_written = False
        self.cols: dict[str, h5py.Dataset] = {}
        res = self.g.create_group("result_1")
        res.attrs["class_names"] = np.array(w.class_names, dtype=h5py.string_dtype())
        self.res = res

    def column(self, group, name, dtype, width=None, **attrs):
        key = f"{group.name}/{name}"
        if key not in self.cols:
            shape = (0,) if width is None else (0, width)
            maxshape = (None,) if width is None else (None, None)
            fill = _fill_value(dtype)
            kw = {} if isinstance(fill, str) else {"fillvalue": fill}
            # frames that skip this column read as the fill value (-1 label, NaN float)
            ds = group.create_dataset(name, shape=shape, maxshape=maxshape, dtype=dtype, chunks=True, **kw)
            if self.n:  # a column first seen after some frames: backfill
                ds.resize(self.n, axis=0)
            for k, v in attrs.items():
                ds.attrs[k] = v
            self.cols[key] = ds
        return self.cols[key]


def _fill_value(dtype):
    dt = np.dtype(dtype) if not isinstance(dtype, h5py.Datatype) else dtype.dtype
    if dt.kind == "f":
        return np.nan
    if dt.kind in "iu":
        return -1 if dt.kind == "i" else 0
    return ""


_PEAK_COLUMNS = ("peakXPosRaw", "peakYPosRaw", "peakTotalIntensity", "peakSNR")


class CXIWriter:
    """Stream frames into a CXI HDF5 file, atomically.

    Frames go to a temporary sibling file; :meth:`close` renames it to
    ``path``.  If the writer is left through an exception (``with`` block) the
    temporary file is deleted and ``path`` is untouched.

    Parameters
    ----------
    path : str or Path
        Final output path (``.cxi`` or ``.h5``).
    compression : {"bitshuffle-lz4", "gzip", "lzf", None}
        Filter for the frame data (bitshuffle-LZ4 is what facility detectors
        write; it needs ``hdf5plugin`` to read).
    mask_mode : {"static", "per_frame"}
        ``"static"`` stores the first frame's mask once per entry (a simulated
        run, one detector); ``"per_frame"`` stores every frame's mask (frames
        gathered from many files, e.g. ``hits.cxi``).
    class_names : sequence of str
        Names indexed by the ``label`` column.
    dtype : numpy dtype, optional
        Storage dtype of the frames; default: that of the first frame.
    max_peaks : int
        Width of the peak-list columns; longer peak lists are cut to their
        first ``max_peaks`` rows (``nPeaks`` counts what is stored).
    """

    def __init__(self, path, *, compression="bitshuffle-lz4", mask_mode="static", class_names=CLASS_NAMES, dtype=None,
                 max_peaks: int = 2048):
        if mask_mode not in ("static", "per_frame"):
            raise ValueError("mask_mode must be 'static' or 'per_frame'")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.compression = compression
        self.mask_mode = mask_mode
        self.class_names = tuple(class_names)
        self.dtype = dtype
        self.max_peaks = int(max_peaks)
        self._tmp = _tmp_name(self.path)
        self._h5 = h5py.File(self._tmp, "w")
        self._h5.attrs["creator"] = "diffscreen"
        self._h5.create_dataset("cxi_version", data=160)
        self._entries: dict[tuple, _Entry] = {}
        self.n_frames = 0

    def _entry(self, shape, dtype) -> _Entry:
        if shape not in self._entries:
            name = f"entry_{len(self._entries) + 1}"
            self._entries[shape] = _Entry(self._h5, name, shape, self.dtype or dtype, self)
        return self._entries[shape]

    def append(
        self,
        data: np.ndarray,
        meta: FrameMeta | None = None,
        *,
        mask: np.ndarray | None = None,
        label: int | str | None = None,
        probabilities=None,
        n_spots: int | None = None,
        peaks: np.ndarray | None = None,
        extra: dict | None = None,
    ) -> None:
        """Append one frame.

        Parameters
        ----------
        data : (H, W) ndarray
            Frame pixels (ADU).
        meta : FrameMeta, optional
            Geometry and origin; unknown values are stored as NaN.
        mask : (H, W) bool ndarray, optional
            True = bad pixel.
        label : int or str, optional
            Class index or name (from ``class_names``).
        probabilities : (C,) array_like, optional
            Class probabilities.
        n_spots : int, optional
            Number of detectable Bragg spots.
        peaks : (P, 4) ndarray, optional
            Columns x (fast scan, px), y (slow scan, px), total intensity (ADU), SNR;
            at most ``max_peaks`` rows are kept.
        extra : dict of str -> float, optional
            Further per-frame scalars, stored under ``result_1``.
        """
        data = np.asarray(data)
        if data.ndim != 2:
            raise ValueError(f"CXIWriter.append expects a 2-D frame, got shape {data.shape}")
        check_free_space(self._tmp.parent, data.nbytes + (0 if mask is None else mask.size))
        e = self._entry(data.shape, data.dtype)
        i = e.n
        e.data.resize(i + 1, axis=0)
        e.data[i] = data
        if mask is not None:
            if e.mask is not None:
                e.mask.resize(i + 1, axis=0)
                e.mask[i] = mask.astype("u1")
            elif not e.static_mask_written:
                e.det.create_dataset("mask", data=mask.astype("u2"), **compression_options(self.compression))
                e.static_mask_written = True
        elif e.mask is not None:
            e.mask.resize(i + 1, axis=0)
            e.mask[i] = 0
        meta = meta or FrameMeta(source="")
        if not e.det.get("description"):
            e.det.create_dataset("description", data=meta.detector or "unknown")
        px = np.nan if meta.pixel_size_mm is None else meta.pixel_size_mm * 1e-3
        bc = meta.beam_centre_px or (np.nan, np.nan)
        energy = np.nan if not meta.wavelength_A else _HC_EV_A / meta.wavelength_A * EV_TO_J
        dist = np.nan if meta.distance_mm is None else meta.distance_mm * 1e-3
        src = e.g.require_group("instrument_1/source_1")
        values = [
            (e.det, "distance", "f8", dist, {"units": "m"}),
            (e.det, "x_pixel_size", "f8", px, {"units": "m"}),
            (e.det, "y_pixel_size", "f8", px, {"units": "m"}),
            (e.det, "beam_center_x", "f8", bc[0], {"units": "pixel"}),
            (e.det, "beam_center_y", "f8", bc[1], {"units": "pixel"}),
            (src, "energy", "f8", energy, {"units": "J"}),
            (e.res, "source_file", h5py.string_dtype(), meta.source, {}),
            (e.res, "source_frame", "i8", meta.index, {}),
        ]
        if label is not None:
            lab = self.class_names.index(label) if isinstance(label, str) else int(label)
            values.append((e.res, "label", "i1", lab, {}))
        if n_spots is not None:
            values.append((e.res, "n_spots", "i4", int(n_spots), {}))
        for k, v in (extra or {}).items():
            values.append((e.res, k, "f8", float(v), {}))
        for group, name, dt, v, attrs in values:
            ds = e.column(group, name, dt, **attrs)
            ds.resize(i + 1, axis=0)
            ds[i] = v
        if probabilities is not None:
            p = np.asarray(probabilities, dtype="f4")
            ds = e.column(e.res, "probabilities", "f4", width=p.size)
            ds.resize(i + 1, axis=0)
            ds[i] = p
        if peaks is not None:
            self._append_peaks(e, i, np.asarray(peaks, dtype="f4").reshape(-1, 4))
        e.n += 1
        self.n_frames += 1

    def _append_peaks(self, e: _Entry, i: int, peaks: np.ndarray) -> None:
        peaks = peaks[: self.max_peaks]
        if "nPeaks" not in e.res:
            for name in _PEAK_COLUMNS:
                ds = e.res.create_dataset(
                    name, shape=(e.n, self.max_peaks), maxshape=(None, self.max_peaks), dtype="f4",
                    chunks=(8, self.max_peaks), compression="lzf", fillvalue=0.0,
                )
                e.cols[ds.name] = ds
            e.column(e.res, "nPeaks", "i4")
        n = e.cols[e.res.name + "/nPeaks"]
        n.resize(i + 1, axis=0)
        n[i] = len(peaks)
        for j, name in enumerate(_PEAK_COLUMNS):
            ds = e.cols[f"{e.res.name}/{name}"]
            ds.resize(i + 1, axis=0)
            if len(peaks):
                ds[i, : len(peaks)] = peaks[:, j]

    @property
    def file(self) -> h5py.File:
        """The open HDF5 file (still under its temporary name).

        For run-level datasets and attributes a caller adds before
        :meth:`close` (e.g. the multi-label table of a simulated CDI run);
        they appear atomically with the rest of the file.
        """
        return self._h5

    def close(self) -> Path:
        """Finish the file and rename it to its final path.

        Returns
        -------
        Path
            The final path.
        """
        if self._h5 is None:
            return self.path
        for e in self._entries.values():  # columns some frames skipped: pad with the fill value
            for ds in e.cols.values():
                if ds.shape[0] < e.n:
                    ds.resize(e.n, axis=0)
        self._h5.close()
        self._h5 = None
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file; ``path`` is untouched.

        Never raises: after a failed write (disk full) HDF5 may fail to close
        the file, and the temporary file is removed all the same.
        """
        h5, self._h5 = self._h5, None
        if h5 is not None:
            try:
                h5.close()
            except Exception:  # noqa: BLE001 - HDF5 cannot flush after ENOSPC; the file goes anyway
                pass
        self._tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def merge_cxi(sources, out_path, *, compression="bitshuffle-lz4") -> Path:
    """Concatenate CXI files written by :class:`CXIWriter` into one, atomically.

    Entries are matched by frame shape; every per-frame dataset (first axis
    resizable) is concatenated, everything else is copied from the first file
    that has it.  Sources are only read.

    Parameters
    ----------
    sources : sequence of path
        Files in the order their frames should appear.
    out_path : path
    compression : str or None
        Filter for the frame data (see :func:`compression_options`).

    Returns
    -------
    Path
    """
    out_path = Path(out_path)
    tmp = _tmp_name(out_path)
    comp = compression_options(compression)
    try:
        with h5py.File(tmp, "w") as out:
            out.attrs["creator"] = "diffscreen"
            out.create_dataset("cxi_version", data=160)
            entry_of_shape: dict[tuple, str] = {}
            for src_path in sources:
                with h5py.File(src_path, "r") as src:
                    for name in sorted(k for k in src if k.startswith("entry_")):
                        shape = src[name]["data_1/data"].shape[1:]
                        if shape not in entry_of_shape:
                            entry_of_shape[shape] = f"entry_{len(entry_of_shape) + 1}"
                        _merge_entry(src[name], out.require_group(entry_of_shape[shape]), comp)
        os.replace(tmp, out_path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return out_path


def _filters(ds: h5py.Dataset) -> list:
    """The filter pipeline of a dataset: ``(id, flags, values)`` per filter, in order."""
    plist = ds.id.get_create_plist()
    return [plist.get_filter(k)[:3] for k in range(plist.get_nfilters())]


def _same_storage(a: h5py.Dataset, b: h5py.Dataset) -> bool:
    """Whether a frame's stored chunk of ``a`` can be copied into ``b`` as it is: one frame per chunk, the
    same dtype and the same filter pipeline."""
    whole = (1, *a.shape[1:])
    return a.chunks == whole and b.chunks == whole and a.dtype == b.dtype and _filters(a) == _filters(b)


def _merge_entry(src: h5py.Group, dst: h5py.Group, comp: dict) -> None:
    for k, v in src.attrs.items():
        dst.attrs[k] = v

    def visit(name, obj):
        if isinstance(obj, h5py.Group):
            g = dst.require_group(name)
            for k, v in obj.attrs.items():
                g.attrs[k] = v
            return
        per_frame = obj.maxshape and obj.maxshape[0] is None
        if name not in dst:
            if not per_frame:
                src.copy(obj, dst, name=name)
                return
            kw = comp if obj.ndim == 3 else {}
            chunks = (1, *obj.shape[1:]) if obj.ndim == 3 else True
            ds = dst.create_dataset(
                name, shape=(0, *obj.shape[1:]), maxshape=(None, *([None] * (obj.ndim - 1))),
                dtype=obj.dtype, chunks=chunks, **kw,
            )
            for k, v in obj.attrs.items():
                ds.attrs[k] = v
        elif not per_frame:
            return
        ds = dst[name]
        n0, n = ds.shape[0], obj.shape[0]
        if obj.ndim == 2 and obj.shape[1] > ds.shape[1]:
            ds.resize(obj.shape[1], axis=1)
        ds.resize(n0 + n, axis=0)
        if obj.ndim == 3:
            raw = _same_storage(obj, ds)
            frame_bytes = obj.dtype.itemsize * int(np.prod(obj.shape[1:]))
            for i in range(n):  # frame by frame: bounded memory
                check_free_space(Path(dst.file.filename).parent, frame_bytes)
                if raw:  # the stored (compressed) chunk as it is: no decompression and recompression
                    mask, chunk = obj.id.read_direct_chunk((i, 0, 0))
                    ds.id.write_direct_chunk((n0 + i, 0, 0), chunk, mask)
                else:
                    ds[n0 + i] = obj[i]
        elif obj.ndim == 2:
            ds[n0 : n0 + n, : obj.shape[1]] = obj[...]
        else:
            ds[n0 : n0 + n] = obj[...]

    src.visititems(visit)
