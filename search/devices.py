"""The torch device an encoder or a training loop runs on, and the precision it
computes in.

bf16 halves the bytes a matrix multiply moves and, on CPUs with bf16 matrix units
(Intel AMX ``amx_bf16``, AVX-512 ``avx512_bf16`` on Intel and AMD, Arm ``bf16``), runs
it on those units. Where the CPU has none, oneDNN emulates bf16 and it is slower than
fp32, so the units are detected at run time and fp32 is used without them. Whether
bf16 is *good enough* for a given model is a separate question, answered by measuring
(`search.precision`).
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from typing import Literal

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
PRECISION_ENV = "DISTILSEARCH_PRECISION"
"""Environment variable that sets the default precision (auto, fp32, bf16)."""

_BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")  # x86 AMX, x86 AVX-512, Arm (asimd bf16)


def resolve_device(device: str | None = None) -> str:
    """`device` checked, or by default a CUDA device when one is present, else ``cpu``.

    Raises:
        ValueError: `device` is not a torch device name, or names a CUDA device on a
            machine without one.
    """
    import torch

    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"--device {device!r}: not a torch device (cpu, cuda, cuda:1)") from exc
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: torch sees no CUDA device here; use --device cpu")
    return str(parsed)


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (``/proc/cpuinfo``: ``flags`` on
    x86, ``Features`` on Arm); empty where the file is not there."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def bf16_units(flags: frozenset[str] | None = None) -> str | None:
    """The CPU's bf16 matrix unit (its flag, the strongest first), or None without one.

    Args:
        flags: CPU flags to read (default: this machine's, `cpu_flags`).
    """
    flags = cpu_flags() if flags is None else flags
    if platform.machine().lower() in ("x86_64", "amd64", "i686") or flags & {"avx", "sse2"}:
        candidates: tuple[str, ...] = ("amx_bf16", "avx512_bf16")
    else:
        candidates = _BF16_FLAGS
    return next((f for f in candidates if f in flags), None)


def resolve_precision(
    precision: str | None, device: str = "cpu", flags: frozenset[str] | None = None
) -> Precision:
    """The precision to compute in: `precision` checked, or for ``auto`` (and None,
    unless ``$DISTILSEARCH_PRECISION`` says otherwise) bf16 where the device has bf16
    units (a CPU with `bf16_units`, a CUDA device that supports bf16), else fp32.

    Raises:
        ValueError: `precision` is not one of auto, fp32, bf16.
    """
    if precision is None:
        precision = os.environ.get(PRECISION_ENV) or "auto"
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision {precision!r}: choose one of {', '.join(PRECISIONS)} "
            f"(--precision or ${PRECISION_ENV})"
        )
    if precision != "auto":
        return "bf16" if precision == "bf16" else "fp32"
    if device.startswith("cuda"):
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if bf16_units(flags) is not None else "fp32"
