"""``python -m uclser_tune.data synth|features``: write the synthetic set, or extract a feature store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uclser_tune.data.fsd import DatasetError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["synth"]:
        from uclser_tune.data.synth import main as synth_main

        return synth_main(argv[1:])
    p = argparse.ArgumentParser(
        prog="python -m uclser_tune.data",
        description="Data tools. 'synth --out DIR [--seed S] [--size tiny|small|full]' writes the synthetic "
        "data set (see 'synth --help'); 'features DATA_ROOT --out STORE_DIR' extracts log-mel features of an "
        "FSDnoisy18k-layout folder into a feature store (reused when nothing changed).")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("synth", help="write the synthetic data set (see synth --help)")
    f = sub.add_parser("features", help="extract a feature store from an FSDnoisy18k-layout folder")
    f.add_argument("data_root", type=Path, help="folder with FSDnoisy18k.audio_train, .audio_test and .meta")
    f.add_argument("--out", type=Path, required=True, help="store folder (rebuilt only when data or parameters change)")
    f.add_argument("--workers", type=int, default=2, help="extraction processes (default 2)")
    a = p.parse_args(argv)
    from uclser_tune.data.store import build_store

    try:
        store = build_store(a.data_root, a.out, a.workers)
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{n} {len(s.lengths)} clips / {len(s.frames)} frames" for n, s in store.splits.items())
    print(f"feature store {a.out}: {counts}; mean {store.mean:.4f}, std {store.std:.4f}; "
          f"{store.skipped} file(s) skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
