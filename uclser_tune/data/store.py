"""The feature store: log-mel frames extracted once per data set and shared by every trial.

On disk, per split: ``<split>_frames.npy`` (all clips' frames concatenated, (N_frames, 96) float32),
``<split>_index.npz`` (per-clip offsets, lengths, labels) and ``<split>_clips.json`` (clip ids);
``store.json`` holds the classes, the global mean/std of the pretrain split, the extraction
parameters and a fingerprint of the source data. Loading memory-maps the frames (seconds, even for
FSDnoisy18k's 5 GB). A store is rebuilt when the data or the parameters change, and written to a
temporary folder that is renamed into place, so a crash never leaves a half store that looks valid.
"""

from __future__ import annotations

import csv
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uclser_tune.data.tensors import ClipTensors

FORMAT_VERSION = 1


@dataclass
class SplitStore:
    name: str
    frames: np.ndarray  # (N_frames, 96), memory-mapped
    offsets: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    clip_ids: list[str]

    def to_torch(self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> ClipTensors:
        """All frames as one tensor on ``device``. Without a device or dtype change the tensor shares the
        array's memory: in a Ray trial that is the node's read-only object-store copy, never modified."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            frames = torch.from_numpy(np.ascontiguousarray(self.frames)).to(device=device, dtype=dtype)
            index = [torch.from_numpy(np.asarray(a, dtype=np.int64)).to(device)
                     for a in (self.offsets, self.lengths, self.labels)]
        return ClipTensors(frames, *index, list(self.clip_ids))


@dataclass
class FeatureStore:
    path: Path
    classes: list[str]
    mean: float
    std: float
    params: dict[str, Any]
    splits: dict[str, SplitStore]
    skipped: int

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True) -> FeatureStore:
        path = Path(path)
        meta = json.loads((path / "store.json").read_text())
        splits = {}
        for name in meta["splits"]:
            index = np.load(path / f"{name}_index.npz")
            splits[name] = SplitStore(
                name, np.load(path / f"{name}_frames.npy", mmap_mode="r" if mmap else None),
                index["offsets"], index["lengths"], index["labels"],
                json.loads((path / f"{name}_clips.json").read_text()))
        return cls(path, meta["classes"], meta["mean"], meta["std"], meta["params"], splits, meta["skipped"])


    def shareable(self) -> FeatureStore:
        """The same store with plain-ndarray views of the memory maps. Pickling (Ray's object store)
        ships plain arrays out of band, so every trial on a node maps the one shared copy; a memmap
        subclass would be pickled in band and copied into every trial's private memory."""
        splits = {n: dataclasses.replace(s, frames=np.asarray(s.frames), offsets=np.asarray(s.offsets),
                                         lengths=np.asarray(s.lengths), labels=np.asarray(s.labels))
                  for n, s in self.splits.items()}
        return dataclasses.replace(self, splits=splits)


def fingerprint(root: Path) -> str:
    """Changes when a CSV's content, or any audio file's name, size or mtime, changes."""
    h = hashlib.sha1()
    for csv_path in sorted((root / "FSDnoisy18k.meta").glob("*.csv")):
        h.update(csv_path.name.encode() + csv_path.read_bytes())
    for folder in ("FSDnoisy18k.audio_train", "FSDnoisy18k.audio_test"):
        with os.scandir(root / folder) as it:
            for e in sorted(it, key=lambda e: e.name):
                try:
                    st = e.stat()
                except OSError:  # e.g. a broken link: extraction skips and lists it
                    h.update(f"{folder}/{e.name}:unreadable\n".encode())
                    continue
                h.update(f"{folder}/{e.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _extract(path: str) -> np.ndarray | str:
    """Features of one file, or the reason it was skipped (runs in a worker process)."""
    from uclser_tune.data.features import file_logmel

    try:
        return file_logmel(path)
    except Exception as err:  # noqa: BLE001 - any unreadable file is skipped, never fatal
        return f"{type(err).__name__}: {err}".replace("\n", " ")[:300]


def extract_split(paths: list[str], workers: int = 2, desc: str = "features") -> tuple[list, list[tuple[str, str]]]:
    """Features of every file (None where skipped) using ``workers`` processes, with a progress bar."""
    from tqdm import tqdm

    feats, skipped = [], []
    with ProcessPoolExecutor(max(1, workers)) as pool:
        results = pool.map(_extract, paths, chunksize=max(1, min(64, len(paths) // (8 * max(1, workers)) or 1)))
        for path, r in tqdm(zip(paths, results), total=len(paths), desc=desc, unit="clip", file=sys.stderr):
            if isinstance(r, str):
                skipped.append((path, r))
                feats.append(None)
            else:
                feats.append(r)
    return feats, skipped


def _moments(arrays: list[np.ndarray]) -> tuple[float, float]:
    """Global mean and true standard deviation over all values (float64 accumulation)."""
    n = sum(a.size for a in arrays)
    total = sum(float(a.sum(dtype=np.float64)) for a in arrays)
    mean = total / n
    var = sum(float(((a.astype(np.float64) - mean) ** 2).sum()) for a in arrays) / n
    return mean, float(np.sqrt(var))


def build_store(data_root: str | Path, store_dir: str | Path, workers: int = 2) -> FeatureStore:
    """Extract (or reuse) the store of an FSDnoisy18k-layout folder."""
    from uclser_tune.data.features import PARAMS
    from uclser_tune.data.fsd import SPLITS, DatasetError, read_dataset

    data_root, store_dir = Path(data_root).resolve(), Path(store_dir)
    if store_dir.is_dir() and any(store_dir.iterdir()) and not (store_dir / "store.json").exists():
        raise DatasetError(f"{store_dir} exists and is not a feature store; choose an empty or new folder "
                           "(a store folder is replaced when it is rebuilt)")
    dataset = read_dataset(data_root)
    key = {"format": FORMAT_VERSION, "params": PARAMS, "fingerprint": fingerprint(data_root)}
    meta_path = store_dir / "store.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if {k: meta.get(k) for k in key} == key:
            return FeatureStore.load(store_dir)
        print(f"feature store {store_dir} is out of date (data or parameters changed): rebuilding", file=sys.stderr)

    started = time.perf_counter()
    tmp = store_dir.with_name(f".{store_dir.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        all_skipped: list[tuple[str, str]] = []
        kept: dict[str, list[np.ndarray]] = {}
        splits_meta = {}
        for name in SPLITS:
            table = dataset.splits[name]
            feats, skipped = extract_split(list(table["path"]), workers, desc=f"log-mel {name}")
            all_skipped += skipped
            ok = [i for i, f in enumerate(feats) if f is not None]
            arrays = [feats[i] for i in ok]
            lengths = np.array([len(a) for a in arrays], dtype=np.int64)
            frames = np.concatenate(arrays) if arrays else np.zeros((0, PARAMS["n_mels"]), np.float32)
            np.save(tmp / f"{name}_frames.npy", frames)
            np.savez(tmp / f"{name}_index.npz", offsets=np.cumsum(lengths) - lengths, lengths=lengths,
                     labels=table["label_id"].to_numpy()[ok].astype(np.int64))
            (tmp / f"{name}_clips.json").write_text(json.dumps([str(table["fname"][i]) for i in ok]))
            kept[name] = arrays
            splits_meta[name] = {"clips": len(ok), "frames": int(lengths.sum()), "skipped": len(skipped)}
        # a curated set without a noisy split (e.g. the drum set) normalises with all of its train clips
        basis = kept["pretrain"] or kept["val"]
        if not basis:
            raise DatasetError(f"{data_root}: no readable training clip")
        mean, std = _moments(basis)
        with open(tmp / "skipped.csv", "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["path", "reason"])
            w.writerows(all_skipped)
        meta = {**key, "classes": dataset.classes, "mean": mean, "std": std, "splits": splits_meta,
                "norm_basis": "pretrain" if kept["pretrain"] else "val", "skipped": len(all_skipped),
                "data_root": str(data_root), "extraction_seconds": time.perf_counter() - started}
        (tmp / "store.json").write_text(json.dumps(meta, indent=1))
        shutil.rmtree(store_dir, ignore_errors=True)
        store_dir.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, store_dir)
        if all_skipped:
            print(f"skipped {len(all_skipped)} unreadable file(s); listed in {store_dir / 'skipped.csv'}",
                  file=sys.stderr)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave a half-built store behind
        raise
    return FeatureStore.load(store_dir)


def cache_dir(configured: str = "") -> Path:
    return Path(configured or os.environ.get("UCLSER_CACHE") or Path.home() / ".cache" / "uclser_tune")


@contextmanager
def locked(path: Path):
    """An exclusive file lock on ``path``, so concurrent trials or processes build a store only once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def synthetic_root(size: str, seed: int, cache: str = "") -> Path:
    """The generated synthetic data set in the cache, generated on first use."""
    from uclser_tune.data.synth import GENERATOR_VERSION, generate

    base = cache_dir(cache) / f"synthetic-{size}-seed{seed}-v{GENERATOR_VERSION}"
    root = base / "data"
    with locked(base.with_suffix(".lock")):
        if not (root / "FSDnoisy18k.doc" / "synth_info.json").exists():
            tmp = base / f".data.tmp{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            print(f"generating the synthetic data set ({size}) in {root}", file=sys.stderr)
            generate(tmp, seed=seed, size=size)
            shutil.rmtree(root, ignore_errors=True)
            os.replace(tmp, root)
    return root


def open_store(data_cfg: Any, workers: int = 2) -> FeatureStore:
    """The feature store of a run's data config (``uclser_tune.config.DataConfig``), built on first use."""
    if data_cfg.root == "synthetic":
        root = synthetic_root(data_cfg.synth_size, data_cfg.synth_seed, data_cfg.cache_dir)
        store_dir = root.parent / "store"
    else:
        root = Path(data_cfg.root).expanduser().resolve()
        digest = hashlib.sha1(str(root).encode()).hexdigest()[:12]
        store_dir = cache_dir(data_cfg.cache_dir) / f"store-{root.name}-{digest}"
    with locked(store_dir.with_name(store_dir.name + ".lock")):
        return build_store(root, store_dir, workers)
