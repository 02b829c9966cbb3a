"""Clips per second of the default view pipeline at batch 128: batched (this project) vs the
reference's per-sample NumPy chain on one core, in one run; and the views' share of a training step.

    python benchmarks/views.py [--batches 20] [--encoder resnet18]
"""

from __future__ import annotations

import argparse
import os
import platform
import random

import numpy as np
import torch

from benchmarks.common import fsd_like_clips, timed
from uclser_tune.config import config_from_dict
from uclser_tune.losses import nt_xent
from uclser_tune.models import ContrastiveModel, ProjectionHead, build_encoder
from uclser_tune.views.pipeline import ViewPipeline
from uclser_tune.views.reference import reference_views

B = 128


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--reference-clips", type=int, default=256)
    ap.add_argument("--encoder", default="resnet18")
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    clips = fsd_like_clips(2000)
    cfg = config_from_dict({})
    rows = []

    frames, offsets, lengths = clips.frames.numpy(), clips.offsets.numpy(), clips.lengths.numpy()
    rs, rnd = np.random.RandomState(0), random.Random(0)
    idx = np.arange(a.reference_clips)
    ref_s = timed(lambda: reference_views(frames, offsets, lengths, idx, rs, rnd, -2.0, 1.0), 1)
    ref_rate = a.reference_clips / ref_s
    rows.append(("reference per-sample NumPy, 1 core", "cpu", ref_rate, 1.0))

    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        c = clips.to(device)
        pipe = ViewPipeline.from_config(cfg.views, -2.0, 1.0)
        gen = torch.Generator(device=device).manual_seed(0)
        batch = torch.arange(B, device=device)
        s = timed(lambda: pipe(c, batch, gen), a.batches, sync=device)
        threads = torch.get_num_threads() if device.type == "cpu" else 1
        name = f"batched torch ({threads} threads)" if device.type == "cpu" else "batched torch"
        rows.append((name, device.type, B / s, (B / s) / ref_rate))

        model = ContrastiveModel(enc := build_encoder(a.encoder), ProjectionHead(enc.embed_dim)).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9)

        def step() -> None:
            v1, v2 = pipe(c, batch, gen)
            _, z = model(torch.cat([v1, v2]))
            loss = nt_xent(z[:B], z[B:], 0.2)
            opt.zero_grad()
            loss.backward()
            opt.step()

        step_s = timed(step, 2 if device.type == "cpu" else 20, sync=device)
        rows.append((f"share of a {a.encoder} training step (batch {B})", device.type, s / step_s * 100, None))

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    print("| pipeline | device | clips/s (or % of step) | × reference |\n|---|---|---|---|")
    for name, dev, value, ratio in rows:
        unit = "%" if ratio is None and "share" in name else ""
        print(f"| {name} | {dev} | {value:,.1f}{unit} | {'' if ratio is None else f'{ratio:,.1f}×'} |")


if __name__ == "__main__":
    main()
