"""The torch device an encoder or a training loop runs on."""

from __future__ import annotations


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
