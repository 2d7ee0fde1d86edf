"""Peak extra memory of one call.

Peak extra memory is the growth of the process's peak resident set size over one call: the
kernel's high-water mark ``VmHWM`` is reset by writing ``5`` to ``/proc/self/clear_refs`` just
before the call, and ``VmHWM - VmRSS(before)`` is read after it. This sees every allocation
(NumPy, Numba's runtime, BLAS buffers) -- ``tracemalloc`` would miss Numba's -- and is exact
for allocations that reach the operating system (all large ones); memory re-used from the
allocator's free lists is not counted, which matters only for small buffers. Where
``clear_refs`` cannot be written, a thread samples ``VmRSS`` every millisecond instead.
"""

from __future__ import annotations

import gc
import re
import threading
import time
from typing import Any

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def _status_bytes(key: str) -> int | None:
    """A ``VmXXX`` field of ``/proc/self/status`` in bytes (None where there is no /proc)."""
    try:
        with open(_STATUS) as fh:
            text = fh.read()
    except OSError:
        return None
    m = re.search(rf"^{key}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(m.group(1)) * 1024 if m else None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (``VmHWM``) to the current RSS; False if impossible."""
    try:
        with open(_CLEAR_REFS, "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Context manager: peak resident-memory growth of the process over its body.

    ``extra`` (bytes) is set on exit; ``method`` says how it was measured: ``"vmhwm"`` (the
    kernel's high-water mark after a reset, exact for allocations that reach the OS),
    ``"rss-sampling"`` (a thread polls ``VmRSS`` every millisecond; short peaks may be missed)
    or ``"unavailable"``.
    """

    def __init__(self) -> None:
        self.extra: int | None = None
        self.method = "unavailable"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak = 0

    def __enter__(self) -> PeakMemory:
        gc.collect()
        self._rss0 = _status_bytes("VmRSS")
        if self._rss0 is None:
            return self
        if _reset_peak() and (_status_bytes("VmHWM") or 0) <= self._rss0 + (1 << 20):
            self.method = "vmhwm"
        else:
            self.method = "rss-sampling"
            self._peak = self._rss0
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            v = _status_bytes("VmRSS") or 0
            self._peak = max(self._peak, v)
            time.sleep(0.001)

    def __exit__(self, *exc: Any) -> None:
        if self._rss0 is None:
            return
        if self.method == "vmhwm":
            peak = _status_bytes("VmHWM") or self._rss0
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            peak = max(self._peak, _status_bytes("VmRSS") or 0)
        self.extra = max(0, peak - self._rss0)
