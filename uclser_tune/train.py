"""Single run: ``python -m uclser_tune.train --config FILE.yaml [--set key=value ...]``.

Pre-trains one config with the same library call a search trial uses, evaluates kNN every
``eval.every`` epochs, and writes into the run dir: ``config.yaml``, ``metrics.csv``, TensorBoard
scalars (``tb/``), ``checkpoint.pt`` (last epoch) and ``best.pt`` (best val kNN). Re-run with
``--resume`` to continue after a crash or Ctrl-C.

``--linear`` / ``--finetune`` then evaluate the encoder downstream (the paper's linear evaluation and fine-tuning), from ``best.pt`` as the
reference does (``--downstream-from last``: the final epoch's ``checkpoint.pt``): linear evaluation,
and fine-tuning on the noisy and the small clean task. One row per task goes to ``downstream.csv``
(columns below); ``downstream.json`` adds each task's per-epoch history. A task whose training split
the data set lacks (no noisy split) is skipped with a message.
"""

from __future__ import annotations

import argparse
import csv
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from uclser_tune.config import (
    ConfigError,
    RunConfig,
    config_from_dict,
    describe_config,
    load_config,
    parse_overrides,
)
from uclser_tune.data.fsd import DatasetError
from uclser_tune.runs import RunDir, check_data, epoch_line


def build_parser() -> argparse.ArgumentParser:
    from uclser_tune.training.downstream import CHECKPOINT_FILES, ROW_COLUMNS

    columns = "\n".join(f"  {name:<20} {meaning}" for name, meaning in ROW_COLUMNS.items())
    p = argparse.ArgumentParser(
        prog="python -m uclser_tune.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"downstream.csv columns:\n{columns}\n\nConfig keys (defaults are the paper's):\n" + describe_config(),
    )
    p.add_argument("--config", type=Path, help="run config YAML (missing keys take the paper's defaults)")
    p.add_argument("--schema", action="store_true",
                   help="print the run config's JSON schema (for editors and validators) and exit")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.tau=0.1 --set views.ops=[rrc,noise]")
    p.add_argument("--data", help="FSDnoisy18k-layout folder, or 'synthetic' (sets data.root)")
    p.add_argument("--out", type=Path, help="run dir (default: runs/train/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue from the run dir's last checkpoint")
    p.add_argument("--linear", action="store_true", help="linear evaluation of the encoder after pre-training")
    p.add_argument("--finetune", action="store_true",
                   help="fine-tune the encoder on the noisy and the small clean task after pre-training")
    p.add_argument("--downstream-from", choices=list(CHECKPOINT_FILES), default="best",
                   help="checkpoint the downstream tasks start from: best val kNN (default, as the reference) or "
                        "last epoch; recorded in downstream.csv")
    return p


def resolve_config(args: argparse.Namespace) -> RunConfig:
    overrides = parse_overrides(args.overrides)
    if args.data:
        overrides["data.root"] = args.data
    cfg = load_config(args.config) if args.config else config_from_dict({})
    return cfg.replace(overrides) if overrides else cfg


def progress_bar():
    """A per-epoch batch progress bar on stderr."""
    from tqdm import tqdm

    bar = None

    def on_batch(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, leave=False, unit="batch", file=sys.stderr)
        bar.update(1)
        if done == total:
            bar.close()
            bar = None

    return on_batch


def run_downstream(tasks: list[str], cfg: RunConfig, store, encoder: Any, out: Path) -> None:
    """Run the downstream tasks on ``encoder`` (a ``PretrainedEncoder`` from ``run_encoder``, or a
    pre-training state, recorded as 'given'); write downstream.csv and downstream.json."""
    from uclser_tune.training.downstream import (
        ROW_COLUMNS,
        NoTrainingClipsError,
        PretrainedEncoder,
        encoder_state_of,
        run_task,
    )

    source = f"the {encoder.checkpoint} checkpoint (pre-training epoch {encoder.epoch})" \
        if isinstance(encoder, PretrainedEncoder) else "the given state"
    if not isinstance(encoder, PretrainedEncoder):
        encoder = encoder_state_of(encoder)
    results = []
    for task in tasks:
        print(f"downstream {task} ({cfg.downstream.epochs} epochs) from {source}", file=sys.stderr)
        try:
            result = run_task(task, cfg, store, encoder, progress=progress_bar())
        except NoTrainingClipsError as err:
            print(f"skipping {task}: {err}", file=sys.stderr)
            continue
        results.append(result)
        print(f"{task}: test bAcc {result.test_bacc:.4f} at best val epoch {result.best_epoch} "
              f"(val {result.val_bacc:.4f}; last epoch {result.test_bacc_last:.4f})", flush=True)
    with open(out / "downstream.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(ROW_COLUMNS))
        w.writeheader()
        w.writerows(r.to_row() for r in results)
    (out / "downstream.json").write_text(json.dumps([{**r.to_row(), "history": r.history} for r in results], indent=1))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.schema:
        print(json.dumps(RunConfig.model_json_schema(), indent=1))
        return 0
    try:
        cfg = resolve_config(args)
        out = args.out or Path("runs/train") / (args.config.stem if args.config else "default")
        from uclser_tune.training.runtime import amp_dtype, resolve_device

        amp_dtype(cfg.train.precision, resolve_device(cfg.train.device))  # refuses fp16 on a CPU before any write
        check_data(cfg.data)
        run = RunDir(out, cfg, args.resume)
    except (ConfigError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    # Ctrl-C or `kill -INT` always ends with a checkpoint and the resume hint, even when the shell started
    # this run in the background of a script, which makes it inherit SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from uclser_tune.data.store import open_store
    from uclser_tune.training import NonFiniteLossError, pretrain

    store = open_store(cfg.data)
    if run.state is not None and run.state["epoch"] >= cfg.train.epochs:
        print(f"{out}: pre-training already finished ({run.state['epoch']} epochs)")
    else:
        start = run.state["epoch"] + 1 if run.state else 1
        print(f"pre-training {cfg.model.encoder} (width {cfg.model.width}) for epochs {start}-{cfg.train.epochs} "
              f"into {out}", file=sys.stderr)

        def report(metrics: dict[str, Any], state: dict[str, Any]) -> None:
            run.report(metrics, state)
            run.state = state
            print(epoch_line(metrics, cfg.train.epochs), flush=True)

        began = time.perf_counter()
        try:
            pretrain(cfg, store, report=report, resume=run.state, progress=progress_bar())
        except KeyboardInterrupt:
            done = run.state["epoch"] if run.state else 0
            print(f"\ninterrupted: checkpoint of epoch {done} is in {run.last}; continue with the same command "
                  f"and --resume", file=sys.stderr)
            return 130
        except NonFiniteLossError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"pre-training done in {time.perf_counter() - began:.0f} s; best val kNN {run.best:.4f}; "
              f"checkpoints in {out}")
    tasks = (["linear"] if args.linear else []) + (["finetune_noisy", "finetune_clean"] if args.finetune else [])
    if tasks:
        from uclser_tune.training.downstream import DownstreamLossError

        try:
            from uclser_tune.training.downstream import run_encoder

            run_downstream(tasks, cfg, store, run_encoder(out, args.downstream_from), out)
        except DownstreamLossError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
