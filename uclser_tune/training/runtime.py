"""Device, precision and thread choices shared by pre-training and downstream training."""

from __future__ import annotations

import contextlib
import os

import torch

from uclser_tune.config import TrainConfig


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' → the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name!r} but CUDA is not available here; use 'auto' or 'cpu'")
    return device


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32. Mixed precision is a GPU feature here: CPU stays fp32."""
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def use_channels_last(train: TrainConfig, device: torch.device, encoder: str) -> bool:
    """channels_last speeds up cuDNN convolutions; the CRNN's GRU gains nothing from it."""
    if train.channels_last == "auto":
        return device.type == "cuda" and encoder != "crnn"
    return train.channels_last == "on"


def set_threads(n: int) -> None:
    """Use all cores by default; Ray trials pass their CPU share."""
    torch.set_num_threads(n or os.cpu_count() or 1)


def lr_milestones(fractions: list[float], epochs: int) -> list[int]:
    """Milestone epochs at these fractions of the schedule (the reference's 325/425 of 500 for
    pre-training, 80/160 of 200 downstream), scaled to the configured epochs. A milestone that rounds
    onto another one still applies its decay: MultiStepLR counts repeats."""
    return [max(1, round(f * epochs)) for f in fractions]
