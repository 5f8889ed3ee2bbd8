"""``diffscreen stream``: screen a detector's DECTRIS SIMPLON stream v2 live; ``diffscreen replay``: play a run over it.

The receiver (:class:`~diffscreen.io.simplon.SimplonReceiver`) runs in the
calling thread and does nothing but take messages off the socket, read their
header (nothing is decompressed there) and hand each image to the loop
(:meth:`~diffscreen.live.loop.LiveLoop.offer`, which never blocks: a frame
beyond ``max_buffer`` is dropped and counted).  The loop's worker decodes,
classifies and writes.

A frame source is one small interface: anything that calls
``loop.offer(StreamItem(frame))`` with an object that has ``name``,
``index``, ``nbytes`` and ``decode() -> (raw (H, W) pixels, bad (H, W) bool,
FrameMeta)`` plugs in; see docs/live.md for a Karabo bridge, ASAP::O or psana
source.
"""

from __future__ import annotations

import time

from diffscreen.io.simplon import SimplonReceiver, send_run
from diffscreen.live.loop import ErrorItem, LiveLoop, LiveSummary, StreamItem

__all__ = ["receive", "stream", "replay"]


def receive(endpoint: str, loop: LiveLoop, *, idle: float | None = None, until_end: bool = False, status=None,
            should_stop=None) -> dict:
    """Hand every image of a stream v2 endpoint to a running loop until told to stop.

    Parameters
    ----------
    endpoint : str
        ``tcp://HOST:PORT`` of the detector (or of ``diffscreen replay``).
    loop : LiveLoop
        Started.
    idle : float, optional
        Stop after this many seconds without a message.
    until_end : bool
        Stop at the first end message.
    status : callable, optional
        ``status(text)`` for one-line news (series started, ended, bad messages).
    should_stop : callable, optional
        Polled every 0.1 s; True stops.

    Returns
    -------
    dict
        ``series`` started, ``bad`` messages, ``images`` received.
    """
    seen = {"series": 0, "bad": 0, "images": 0}
    last = time.monotonic()
    with SimplonReceiver(endpoint) as rx:
        while True:
            ev = rx.poll(0.1)
            now = time.monotonic()
            if ev is None:
                if idle is not None and now - last >= idle:
                    break
                if should_stop is not None and should_stop():
                    break
                continue
            last = now
            kind, what = ev
            if kind == "image":
                seen["images"] += 1
                loop.offer(StreamItem(what))
            elif kind == "start":
                seen["series"] += 1
                if status:
                    status(f"series {what.series_id} ({what.name}): {what.number_of_images or '?'} images of "
                           f"{what.shape[0]}x{what.shape[1]}" + ("" if what.mask is not None else ", no pixel mask"))
            elif kind == "end":
                if status:
                    status(f"series {what.get('series_id')} ended")
                if until_end:
                    break
            else:
                seen["bad"] += 1
                loop.offer(ErrorItem(f"stream:{endpoint}", -1 - seen["bad"], f"message not understood: {what}"))
                if status:
                    status(f"message not understood: {what}")
            if should_stop is not None and seen["images"] % 64 == 0 and should_stop():
                break
    return seen


def stream(endpoint: str, out, *, idle: float | None = None, until_end: bool = False, status=None,
           **loop_options) -> LiveSummary:
    """Screen a stream v2 endpoint into ``out`` until idle, the end message (``until_end``) or Ctrl-C.

    Parameters
    ----------
    endpoint : str
    out : str or Path
    idle, until_end, status
        As :func:`receive`.
    **loop_options
        :class:`~diffscreen.live.loop.LiveLoop` options (``model``, ``method``,
        ``batch_size``, ``workers``, ``max_buffer``, ``chunk_seconds``, ``write_cxi``,
        ``observer``, ``publish``, ``fresh``).

    Returns
    -------
    LiveSummary

    Raises
    ------
    ConfigError, OutputError, ModelFileError
        As :class:`~diffscreen.live.loop.LiveLoop`; a bad endpoint.
    """
    loop = LiveLoop(out, source=endpoint, **loop_options)
    loop.start()
    try:
        receive(endpoint, loop, idle=idle, until_end=until_end, status=status,
                should_stop=lambda: loop.failure is not None)
    except KeyboardInterrupt:
        if status:
            status("interrupted: screening what was received, then stopping")
    except BaseException:
        loop.close(drain=False)
        raise
    return loop.close()


def replay(spec, to: str, *, rate: float | None = None, compression: str = "bslz4", count: int | None = None,
           wait_s: float = 30.0, progress=None) -> dict:
    """Play a run (a CXI file, or any file a reader opens) over stream v2 to whoever connects at ``to``.

    See :func:`diffscreen.io.simplon.send_run`; the frames carry their file
    name, index and geometry, so ``diffscreen stream`` names and screens them
    as ``diffscreen screen`` does the file.
    """
    return send_run(spec, to, rate=rate, compression=compression, count=count, wait_s=wait_s, progress=progress)
