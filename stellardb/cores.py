"""How many threads stellardb's own NumPy work uses: one per core this process may run on."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores this process may run on (respects CPU affinity and cpusets, unlike os.cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
