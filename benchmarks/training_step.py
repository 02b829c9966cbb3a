"""The timed pre-training step that ``throughput`` and ``device_check`` measure: the step
``uclser_tune.training.pretrain`` runs (views, encoder + head + NT-Xent forward, backward, SGD), with the
precision and memory layout resolved by the same ``training.runtime`` functions, timed phase by phase."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.common import fsd_like_clips
from uclser_tune.config import RunConfig, config_from_dict
from uclser_tune.data.tensors import ClipTensors
from uclser_tune.losses import nt_xent
from uclser_tune.training import build_model
from uclser_tune.training.runtime import amp_dtype, autocast, precision_name, use_channels_last
from uclser_tune.views.pipeline import ViewPipeline

PHASES = ("views", "forward", "backward", "optimiser")
CONFIGS = {  # name → train.* overrides
    "fp32": {"precision": "fp32", "channels_last": "off"},
    "fp32+cl": {"precision": "fp32", "channels_last": "on"},
    "bf16": {"precision": "bf16", "channels_last": "off"},
    "bf16+cl": {"precision": "bf16", "channels_last": "on"},
}


def resolved(cfg: RunConfig, device: torch.device) -> str:
    """What a config runs as on ``device``, e.g. 'bf16+cl'."""
    dtype = amp_dtype(cfg.train.precision, device)
    return precision_name(dtype) + ("+cl" if use_channels_last(cfg.train, device, cfg.model.encoder) else "")


def step_fn(cfg: RunConfig, clips: ClipTensors, device: torch.device) -> Callable[[torch.Generator], list[float]]:
    """One pre-training step of ``cfg`` as pretrain runs it; the returned call gives each phase's seconds."""
    pipeline = ViewPipeline.from_config(cfg.views, -2.0, 1.0)
    model = build_model(cfg).to(device)
    dtype = amp_dtype(cfg.train.precision, device)
    channels_last = use_channels_last(cfg.train, device, cfg.model.encoder)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    t = cfg.train
    opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    batch = t.batch_size

    def sync() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def step(gen: torch.Generator) -> list[float]:
        idx = torch.randint(len(clips), (batch,), device=device, generator=gen)
        t0 = sync()
        with torch.no_grad():
            x = torch.cat(pipeline(clips, idx, gen))
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        t1 = sync()
        with autocast(device, dtype):
            _, z = model(x)
        loss = nt_xent(z[:batch], z[batch:], t.tau)
        t2 = sync()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = sync()
        opt.step()
        t4 = sync()
        if not torch.isfinite(loss):
            raise RuntimeError(f"non-finite loss in the benchmark step of {cfg.model.encoder}")
        return [t1 - t0, t2 - t1, t3 - t2, t4 - t3]

    return step


def measure(encoder: str, device: torch.device, configs: list[str], steps: int, batch: int = 128,
            width: float = 1.0, warmup: int = 2, clips: ClipTensors | None = None) -> dict[str, dict[str, Any]]:
    """Per config: median seconds per phase and per step over ``steps`` interleaved steps (after
    ``warmup`` untimed ones), clips/s, and what the config resolved to on ``device``."""
    clips = (clips if clips is not None else fsd_like_clips(2000, seed=0)).to(device)
    cfgs = {name: config_from_dict({"model": {"encoder": encoder, "width": width},
                                    "train": {"batch_size": batch, "device": device.type, **CONFIGS[name]}})
            for name in configs}
    steps_of = {name: step_fn(cfg, clips, device) for name, cfg in cfgs.items()}
    gens = {name: torch.Generator(device=device).manual_seed(0) for name in configs}
    times: dict[str, list[list[float]]] = {name: [] for name in configs}
    for i in range(warmup + steps):
        for name in configs:
            phases = steps_of[name](gens[name])
            if i >= warmup:
                times[name].append(phases)
    out = {}
    for name, rows in times.items():
        step = statistics.median(sum(r) for r in rows)
        out[name] = {"seconds": step, "clips_per_s": batch / step, "runs_as": resolved(cfgs[name], device),
                     **{p: statistics.median(r[j] for r in rows) for j, p in enumerate(PHASES)}}
    return out
