"""Device choice: ``"auto"`` is CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

import torch

__all__ = ["resolve_device", "available_devices", "device_name", "progress_every_for", "release_memory"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn a user's device choice into a :class:`torch.device`, checking it exists."""
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda:N', got {device!r}")
    choice = device.strip().lower()
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(choice)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was asked for, but torch sees no CUDA GPU; use 'auto' or 'cpu'")
        index = 0 if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} does not exist: torch sees {torch.cuda.device_count()} CUDA GPU(s)")
        return torch.device("cuda", index)
    if dev.type == "mps" and not _mps_available():
        raise ValueError(f"device {device!r} was asked for, but Apple MPS is not available; use 'auto' or 'cpu'")
    if dev.type not in {"cpu", "cuda", "mps"}:
        raise ValueError(f"unsupported device type {dev.type!r}; use 'auto', 'cpu', 'cuda:N' or 'mps'")
    return dev


def progress_every_for(device: torch.device) -> int:
    """Blind iterations between progress records by default: every one on the CPU, where a
    record costs nothing and a stop is then seen within one iteration; 10 on a GPU, where a
    record every iteration (it reads the loss back) would keep the device waiting on the host."""
    return 1 if device.type == "cpu" else 10


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def available_devices() -> list[tuple[str, str]]:
    """``(device string, human-readable label)`` for every device torch can use here."""
    out = [("auto", "auto")]
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        out.append((f"cuda:{i}", f"cuda:{i} ({torch.cuda.get_device_name(i)})"))
    if _mps_available():
        out.append(("mps", "mps (Apple GPU)"))
    out.append(("cpu", "cpu"))
    return out


def device_name(device: torch.device) -> str:
    """A readable name of ``device`` for reports (the GPU model where there is one)."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def release_memory(device: torch.device) -> None:
    """Give cached accelerator memory back once a run has ended or was cancelled."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()
