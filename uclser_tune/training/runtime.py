"""Device, precision and thread choices shared by pre-training and downstream training."""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from pathlib import Path

import torch

from uclser_tune.config import ConfigError, TrainConfig


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' → the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name!r} but CUDA is not available here ({cuda_report()}); "
                           f"use 'auto' or 'cpu'")
    return device


def device_name(device: torch.device) -> str:
    """What ran, for every epoch's metrics: 'cpu', or the CUDA device with its model name."""
    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def cuda_report() -> str:
    """Why CUDA is or is not usable here: torch's build and the NVIDIA kernel driver that is loaded. A
    CUDA build needs a driver at least as new as its CUDA version; a '+cpu' build never sees a GPU."""
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "build without CUDA"
    try:
        first = Path("/proc/driver/nvidia/version").read_text().splitlines()[0]
        driver = "NVIDIA driver " + next((w for w in first.split() if w[:1].isdigit() and "." in w), first)
    except (OSError, IndexError):
        driver = "no NVIDIA driver loaded"
    return f"torch {torch.__version__} ({build}), {driver}"


# measured by a reviewer in one run (results/benchmarks/README.md, "Mixed precision and memory layout on the CPU")
BF16_EMULATED = ("train.precision: 'bf16' on this CPU, which has no native bf16 (no AVX512-BF16/AMX): oneDNN "
                 "emulates it with fp32 arithmetic, measured 7x slower than fp32 for a ResNet-18 on an AVX2-only "
                 "AMD EPYC; 'auto' runs fp32 here")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (x86 AVX512-BF16 or AMX, Arm's BF16 extension). Only
    there is bf16 autocast a known speed-up; elsewhere oneDNN emulates bf16 with fp32 arithmetic.
    torch's own ``get_cpu_capability()`` says 'AVX512' with or without BF16, so the kernel's flags decide;
    without /proc/cpuinfo (macOS, Windows) the answer is no and 'auto' stays fp32."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.precision`` on ``device``, or None for fp32.

    'auto' is bf16 where the hardware has it natively (CUDA GPUs that support it, CPUs with
    AVX512-BF16/AMX) and fp32 elsewhere. An explicit 'bf16' is honoured on any device, with a warning on
    a CPU without native bf16: its numerics are the same everywhere (a bf16 result can be reproduced on
    any CPU), only its speed is not, so it is not refused. 'fp16' is refused on a CPU: without fp16
    arithmetic units it is far slower than fp32 (12x on this project's CPU, results/benchmarks/README.md) and
    would need loss scaling besides; bf16 is the CPU's mixed precision.
    """
    if precision == "fp32":
        return None
    if precision == "auto":
        native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_native_bf16()
        return torch.bfloat16 if native else None
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn(BF16_EMULATED, RuntimeWarning, stacklevel=2)
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"train.precision: 'fp16' runs on CUDA GPUs only, and this run's device is "
                          f"{device.type}; use 'bf16' or 'auto' (bf16 where the CPU has it natively) or 'fp32'")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def precision_name(dtype: torch.dtype | None) -> str:
    """What ran, for metrics and checkpoints: 'fp32', 'bf16' or 'fp16'."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def resolve_precision(precision: str, device: torch.device) -> str:
    """``train.precision`` as it will run on ``device``: 'auto' becomes 'bf16' or 'fp32'. Experiments pin
    this once, so that every run of a measurement uses the same arithmetic and records it."""
    return precision_name(amp_dtype(precision, device))


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def use_channels_last(train: TrainConfig, device: torch.device, encoder: str) -> bool:
    """'auto': on a CPU running bf16, channels_last for every encoder: oneDNN's bf16 convolutions want
    it, and the CRNN's conv stack gains as much as the others (measured 1.1-1.6x over bf16 alone,
    results/benchmarks/README.md). On CUDA (cuDNN's fast layout) for the conv encoders only, as before (not
    measured on a GPU yet)."""
    if train.channels_last == "auto":
        if device.type == "cuda":
            return encoder != "crnn"
        return amp_dtype(train.precision, device) == torch.bfloat16
    return train.channels_last == "on"


def set_threads(n: int) -> None:
    """Use all cores by default; Ray trials pass their CPU share."""
    torch.set_num_threads(n or os.cpu_count() or 1)


def lr_milestones(fractions: list[float], epochs: int) -> list[int]:
    """Milestone epochs at these fractions of the schedule (the reference's 325/425 of 500 for
    pre-training, 80/160 of 200 downstream), scaled to the configured epochs. A milestone that rounds
    onto another one still applies its decay: MultiStepLR counts repeats."""
    return [max(1, round(f * epochs)) for f in fractions]


def batches(order: torch.Tensor, batch_size: int, drop_single: bool) -> list[torch.Tensor]:
    """Consecutive batches of ``order``; a final batch of one clip is dropped when BN trains (it would fail)."""
    parts = list(order.split(batch_size))
    return parts[:-1] if drop_single and len(parts) > 1 and len(parts[-1]) == 1 else parts
