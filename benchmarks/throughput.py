"""Pre-training throughput per encoder: clips per second of a full training step at batch 128 (256
views) and the share of the step spent in the views, the forward pass (encoder, head, NT-Xent), the
backward pass and the optimiser, on the CPU and on a GPU when one is present.

    python -m benchmarks.throughput [--steps 3] [--encoders resnet18 vgg_like crnn]

The step is the one ``uclser_tune.training.pretrain`` runs (same pipeline, model, loss, optimiser,
channels_last and mixed-precision choices), cut into timed phases with device synchronisation.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from benchmarks.common import fsd_like_clips
from uclser_tune.config import config_from_dict
from uclser_tune.losses import nt_xent
from uclser_tune.training import build_model
from uclser_tune.training.runtime import amp_dtype, autocast, use_channels_last
from uclser_tune.views.pipeline import ViewPipeline

PHASES = ("views", "forward", "backward", "optimiser")


def profile(encoder: str, device: torch.device, steps: int, batch: int) -> dict[str, float]:
    """Median seconds per phase over ``steps`` steps after two warm-up steps."""
    cfg = config_from_dict({"model": {"encoder": encoder}, "train": {"batch_size": batch}})
    clips = fsd_like_clips(2000, seed=0).to(device)
    pipeline = ViewPipeline.from_config(cfg.views, -2.0, 1.0)
    model = build_model(cfg).to(device)
    channels_last = use_channels_last(cfg.train, device, encoder)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
    dtype = amp_dtype("auto", device)
    gen = torch.Generator(device=device).manual_seed(0)

    def sync() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    times: dict[str, list[float]] = {p: [] for p in PHASES}
    for step in range(steps + 2):
        idx = torch.randint(len(clips), (batch,), device=device, generator=gen)
        t0 = sync()
        with torch.no_grad():
            x = torch.cat(pipeline(clips, idx, gen))
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        t1 = sync()
        with autocast(device, dtype):
            _, z = model(x)
        loss = nt_xent(z[:batch], z[batch:], cfg.train.tau)
        t2 = sync()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = sync()
        opt.step()
        t4 = sync()
        if step >= 2:
            for p, dt in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                times[p].append(dt)
    return {p: sorted(v)[len(v) // 2] for p, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoders", nargs="+", default=["resnet18", "vgg_like", "crnn"])
    ap.add_argument("--steps", type=int, default=3, help="timed steps per encoder and device (after 2 warm-up)")
    ap.add_argument("--gpu-steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=128)
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    name = {"cpu": f"cpu ({torch.get_num_threads()} threads)"}
    if torch.cuda.is_available():
        name["cuda"] = torch.cuda.get_device_name()
    print(f"batch {a.batch} clips = {2 * a.batch} views of 101×96; median of the timed steps; torch {torch.__version__}")
    print("| encoder | device | clips/s | ms/step | views | forward | backward | optimiser |")
    print("|---|---|---|---|---|---|---|---|")
    for device in devices:
        for encoder in a.encoders:
            t = profile(encoder, device, a.steps if device.type == "cpu" else a.gpu_steps, a.batch)
            total = sum(t.values())
            shares = " | ".join(f"{t[p] / total * 100:.1f}%" for p in PHASES)
            print(f"| {encoder} | {name[device.type]} | {a.batch / total:,.1f} | {total * 1e3:,.0f} | {shares} |",
                  flush=True)


if __name__ == "__main__":
    main()
