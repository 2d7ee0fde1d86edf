"""What the result records about the machine: its load average and a description (Python,
NumPy, Numba, CPU, memory, BLAS and the environment variables that change the timings)."""

from __future__ import annotations

import os
import platform
import re
from typing import Any

import numpy as np


def loadavg() -> float | None:
    """The one-minute load average (None where there is no /proc)."""
    try:
        with open("/proc/loadavg") as fh:
            return float(fh.read().split()[0])
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    """Python, NumPy and Numba versions, platform, CPU, memory, BLAS (threadpoolctl) and the
    environment variables in force that change the timings."""
    import numba

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "numba_threads": int(numba.config.NUMBA_NUM_THREADS),
        "numba_threading_layer": None,
    }
    try:
        with open("/proc/cpuinfo") as fh:
            m = re.search(r"^model name\s*:\s*(.+)$", fh.read(), re.MULTILINE)
            info["cpu"] = m.group(1).strip() if m else None
    except OSError:
        info["cpu"] = None
    mem = None
    try:
        with open("/proc/meminfo") as fh:
            m = re.search(r"^MemTotal:\s+(\d+)", fh.read(), re.MULTILINE)
            mem = int(m.group(1)) * 1024 if m else None
    except OSError:
        pass
    info["memory_bytes"] = mem
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [
            {k: p.get(k) for k in ("internal_api", "version", "architecture", "num_threads", "filepath")}
            for p in threadpool_info()
        ]
    except Exception:
        info["blas"] = None
    info["env"] = {
        k: os.environ[k]
        for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS")
        if k in os.environ
    }
    return info
