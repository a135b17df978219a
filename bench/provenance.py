"""What every benchmark output records: the command, the commit, the date, the machine,
and whether the machine was idle while it ran.

Idle is measured, not assumed: the CPU seconds the machine spent busy during the run
minus those of this process and its children, against the wall time and cores. Two heavy jobs on 2
cores halve each other, so a figure taken beside another job says so.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

BUSY_SHARE = 0.05
"""Other processes' CPU time above this share of (wall time x cores) makes a run busy."""


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
        return out.stdout.strip() + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores)."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0))


def _own_seconds() -> float:
    """CPU seconds of this process and of its children (running or waited for)."""
    me = psutil.Process()
    t = me.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            c = child.cpu_times()
            total += c.user + c.system
    return float(total)


def _others_cpu() -> float:
    """CPU seconds spent by everything else on the machine since boot, as far as this
    process can tell (processes that came and went during a run count too)."""
    return _busy_seconds() - _own_seconds()


class Provenance:
    """Start it before measuring, `finish` it after; its record goes into the output.

    Attributes:
        started: Wall-clock start (`time.time`).
    """

    def __init__(self) -> None:
        self.started = time.time()
        self._t0 = time.perf_counter()
        self._others0 = _others_cpu()
        self.load_before = os.getloadavg()[0]

    def finish(self) -> dict[str, Any]:
        """The record: command, commit, date, machine, and the idle measurement."""
        wall = time.perf_counter() - self._t0
        others = max(0.0, _others_cpu() - self._others0)
        cores = psutil.cpu_count() or 1
        share = others / max(wall * cores, 1e-9)
        return {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "commit": _commit(),
            "date": dt.datetime.fromtimestamp(self.started, dt.timezone.utc).isoformat(
                timespec="seconds"
            ),
            "machine": {
                "cpu": platform.processor() or platform.machine(),
                "cores": cores,
                "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            },
            "wall_seconds": round(wall, 1),
            "others_cpu_share": round(share, 3),
            "idle": share <= BUSY_SHARE,
            "load_before": round(self.load_before, 2),
        }


def write(folder: Path, name: str, payload: dict[str, Any]) -> Path:
    """Write `payload` as ``folder/name`` (JSON), creating the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
