"""Clips per second of the default view pipeline at batch 128: batched (this project; CPU with all
torch threads, and GPU when there is one) vs the reference's per-sample NumPy chain on one core, in
one run; and the share of a training step that the views take.

Timings alternate between the contenders and report the best and the median repeat, so that a
shared machine's noise hits both alike; the best repeat is the least disturbed one.

    python -m benchmarks.views [--repeats 15] [--encoder resnet18] [--out views_bench.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from benchmarks.common import fsd_like_clips
from uclser_tune.config import config_from_dict
from uclser_tune.data.tensors import ClipTensors
from uclser_tune.losses import nt_xent
from uclser_tune.models import ContrastiveModel, ProjectionHead, build_encoder
from uclser_tune.views.pipeline import ViewPipeline
from uclser_tune.views.reference import reference_views

B = 128


def repeat(fns: dict[str, Callable[[], object]], n: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per call of each function, the functions interleaved, after one warm-up call each."""
    def once(fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for fn in fns.values():
        once(fn)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(n):
        for name, fn in fns.items():
            times[name].append(once(fn))
    return times


def bench_device(device: torch.device, clips: ClipTensors, ref: Callable[[], object] | None,
                 a: argparse.Namespace) -> dict[str, list[float]]:
    """Batched views on ``device`` (interleaved with the reference when given), then a training step."""
    c = clips.to(device)
    pipe = ViewPipeline.from_config(config_from_dict({}).views, -2.0, 1.0)  # the paper's default chain
    gen = torch.Generator(device=device).manual_seed(0)
    idx = torch.arange(B, device=device)
    contenders = {"batched": lambda: pipe(c, idx, gen)} | ({"reference": ref} if ref else {})
    t = repeat(contenders, a.repeats, device)

    model = ContrastiveModel(enc := build_encoder(a.encoder), ProjectionHead(enc.embed_dim)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9)

    def step() -> None:
        v1, v2 = pipe(c, idx, gen)
        _, z = model(torch.cat([v1, v2]))
        loss = nt_xent(z[:B], z[B:], 0.2)
        opt.zero_grad()
        loss.backward()
        opt.step()

    if a.step_repeats:
        t["step"] = repeat({"step": step}, a.step_repeats if device.type == "cpu" else 20, device)["step"]
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=15, help="timed batches per contender")
    ap.add_argument("--encoder", default="resnet18", help="encoder of the training step")
    ap.add_argument("--step-repeats", type=int, default=3, help="timed training steps on a CPU; 0: none")
    ap.add_argument("--out", help="also write the markdown table to this file")
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    clips = fsd_like_clips(2000)
    frames, offsets, lengths = clips.frames.numpy(), clips.offsets.numpy(), clips.lengths.numpy()
    rs, rnd = np.random.RandomState(0), random.Random(0)

    def ref() -> object:
        return reference_views(frames, offsets, lengths, np.arange(B), rs, rnd, -2.0, 1.0)

    results = {"cpu": bench_device(torch.device("cpu"), clips, ref, a)}
    if torch.cuda.is_available():
        results["cuda"] = bench_device(torch.device("cuda"), clips, None, a)

    med = statistics.median
    ref_t = results["cpu"]["reference"]
    lines = [f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
             + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
             (f"default views (mix-back α=0.05 energy-adjusted, RRC, compression, noise) of a batch of "
              f"{B} clips = {2 * B} views of 101×96; {a.repeats} interleaved repeats"), "",
             "| pipeline | device | clips/s best | clips/s median | × ref., best | × ref., median |",
             "|---|---|---|---|---|---|"]
    for name, dev, t in [("per-sample NumPy reference, 1 core", "cpu", ref_t)] + [
            (f"batched torch{f', {torch.get_num_threads()} threads' if d == 'cpu' else ''}", d, r["batched"])
            for d, r in results.items()]:
        lines.append(f"| {name} | {dev} | {B / min(t):,.0f} | {B / med(t):,.0f} | {min(ref_t) / min(t):.1f}× "
                     f"| {med(ref_t) / med(t):.1f}× |")
    if a.step_repeats:
        lines += ["", (f"| training step: views + {a.encoder} fwd/bwd + SGD on {2 * B} views | device "
                       "| ms per step (best) | views' share (best/best) |"), "|---|---|---|---|"]
        lines += [f"| views + step | {dev} | {min(t['step']) * 1e3:,.0f} "
                  f"| {min(t['batched']) / min(t['step']) * 100:.1f}% |" for dev, t in results.items()]
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
