"""Pre-training throughput per encoder and precision: clips per second of the full training step (views,
encoder + head + NT-Xent forward, backward, SGD) at batch 128 (256 views) in fp32, bf16 autocast and
bf16 + channels_last, each as a ratio to fp32 measured in the same run, with each phase's share.

    python -m benchmarks.throughput [--steps 5] [--encoders resnet18 vgg_like crnn]
                                    [--configs fp32 bf16 bf16+cl] [--threads 2]

The step is the one ``uclser_tune.training.pretrain`` runs, with the precision and memory layout resolved
by the same ``training.runtime`` functions from ``train.precision`` / ``train.channels_last``; the line
after each encoder's rows says which of them the shipped config (``auto`` / ``auto``) runs as here.
The configs of one encoder are interleaved step by step (warm-up steps first), so a load change on a
shared machine hits them all alike; the load average before and after is printed with the table.
"""

from __future__ import annotations

import argparse
import os

import torch

from benchmarks.training_step import CONFIGS, PHASES, measure, resolved
from uclser_tune.config import config_from_dict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoders", nargs="+", default=["resnet18", "vgg_like", "crnn"])
    ap.add_argument("--configs", nargs="+", default=["fp32", "bf16", "bf16+cl"], choices=list(CONFIGS))
    ap.add_argument("--steps", type=int, default=5, help="timed steps per config (after 2 warm-up), interleaved")
    ap.add_argument("--gpu-steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all cores)")
    a = ap.parse_args()
    if "fp32" not in a.configs:
        ap.error("--configs must include fp32 (the baseline of the ratios)")
    torch.set_num_threads(a.threads or os.cpu_count() or 1)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    name = {"cpu": f"cpu ({torch.get_num_threads()} threads)"}
    if torch.cuda.is_available():
        name["cuda"] = torch.cuda.get_device_name()
    print(f"batch {a.batch} clips = {2 * a.batch} views of {101}×96, width {a.width}; median of {a.steps} "
          f"interleaved steps; torch {torch.__version__}")
    print("| encoder | device | config | runs as | clips/s | ms/step | × fp32 | views | forward | backward | optimiser |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for device in devices:
        for encoder in a.encoders:
            load = os.getloadavg()[0]
            res = measure(encoder, device, a.configs, a.steps if device.type == "cpu" else a.gpu_steps, a.batch,
                          a.width)
            for cfg_name, r in res.items():
                shares = " | ".join(f"{r[p] / r['seconds'] * 100:.1f}%" for p in PHASES)
                print(f"| {encoder} | {name[device.type]} | {cfg_name} | {r['runs_as']} | {r['clips_per_s']:,.1f} | "
                      f"{r['seconds'] * 1e3:,.0f} | {r['clips_per_s'] / res['fp32']['clips_per_s']:.2f}× | "
                      f"{shares} |", flush=True)
            default = config_from_dict({"model": {"encoder": encoder}, "train": {"device": device.type}})
            print(f"<!-- {encoder} on {device.type}: the default config runs as {resolved(default, device)}; load "
                  f"average {load:.2f} before, {os.getloadavg()[0]:.2f} after -->", flush=True)


if __name__ == "__main__":
    main()
