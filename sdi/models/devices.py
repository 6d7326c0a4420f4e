"""Devices and dtypes by name (config.device, precision keys): ``auto`` picks CUDA when present."""

from __future__ import annotations

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda when present, else cpu; anything else is passed to torch.device.

    Asking for a GPU that is not there fails (naming config.device) instead of falling back to the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"config.device: {name!r} but this job sees {torch.cuda.device_count()} CUDA GPU(s); "
                         "set device to auto or cpu, or run the job where the GPU is")
    return device


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Config dtype name -> torch dtype; fp16 falls back to fp32 on CPU (bf16 is kept: CPUs have bf16 kernels)."""
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r} is not one of {sorted(DTYPES)}")
    if device.type == "cpu" and name == "fp16":
        return torch.float32
    return DTYPES[name]
