"""Shared helpers for the benchmarks: timing, peak memory of child processes, output."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
VENV_BIN = Path(sys.executable).parent


def machine() -> str:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node()} {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}"


def run_cli(args: list[str], env=None) -> tuple[float, float]:
    """Run ``stellardb ARGS`` in a child process; (wall seconds, peak RSS GB of that child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run([str(VENV_BIN / "stellardb"), *args], check=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the max over all waited-for children so far (kB on Linux)
    return wall, max(after, before) / 1e6


def save(name: str, result: dict) -> Path:
    OUT.mkdir(exist_ok=True)
    path = OUT / f"{name}.json"
    import datetime as dt

    result = {"machine": machine(), "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "command": " ".join(sys.argv), **result}
    path.write_text(json.dumps(result, indent=2, default=str))
    return path
