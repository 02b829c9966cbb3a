"""The FSDnoisy18k-sized synthetic set, measured end to end: generation, extraction, the feature store's
size in float32 and float16, its time into Ray's object store and onto a second node, and the memory of
one node running 2 trials with it.

    python -m benchmarks.full_size --out /work/h_full_data [--json results/full_size/full_size.json]
    python -m benchmarks.full_size --out /work/h_full_data --stages standin sizes ray   # without extracting

Stages (each heavy one is a child process, measured with ``wait4``: wall seconds, user+sys CPU seconds
of the process and every descendant it waited for, and the peak RSS of the largest of them):

1. ``generate``: ``uclser_tune.data.synth.generate(size=full)`` with 2 workers.
2. ``extract``: the feature store, built by ``open_store`` exactly where the search looks for it.
2b. ``standin`` (instead of ``extract``, by hand): a store of the set's exact shape with random frames,
   for the object-store and memory figures when the extraction cannot finish (they depend on the
   store's shape only); ``sizes`` and the table say when it was used.
3. ``sizes``: frames per split, bytes in float32 and float16 (frames × 96 × itemsize), the store on disk,
   and the largest error of rounding the frames to float16 (log10 units).
4. ``ray``: a head (0 CPUs, 127.0.0.30) and one worker node (2 CPUs, 127.0.0.31), each its own
   ``ray start --block`` process group (in a private network namespace where one can be made). A driver
   puts the store into the object store as the search ships it (``shipped_store``, per dtype) and a
   task pinned to the worker node pulls it (the second node's copy). Then the search CLI runs 2 trials
   at once on the worker node (ResNet-18 at 1/4 width, batch 128, 1 epoch of 2 batches, the kNN on the
   whole val split: at full width that kNN alone is ~10 TFLOP per trial, too long for a shared 2-core
   machine; on a GPU node the model and its activations live on the GPU anyway) for each dtype, while this process samples every process of the worker
   node: the sum of PSS (each shared page counted once across the node, the object store's pages
   included) is the node's memory; USS per trial and the raylet's shared-memory RSS (the store's
   pages on the node) are its parts.

Every figure goes to the JSON (with the machine, its load averages before and after each stage, and
the commit) and a markdown table is printed. ``--stages`` reruns a subset, keeping the other stages'
figures already in the JSON. Only processes this benchmark started are ever stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import cpu_name

ROOT = Path(__file__).resolve().parents[1]
HEAD_IP, WORKER_IP = "127.0.0.30", "127.0.0.31"
STAGES = ("generate", "extract", "standin", "sizes", "ray")
DTYPES = ("float16", "float32")
N_MELS = 96
HOP_FRAMES = 220  # samples per frame at 22,050 Hz (uclser_tune.data.params.HOP)
MB, GB = 1e6, 1e9
# A g5.2xlarge worker (cluster/gpu.yaml): 32 GiB of RAM, one A10G with 24 GB, 8 vCPUs. Ray's default
# object store is 30 % of the memory available when the node starts (ray 2.60,
# ray._private.ray_constants.DEFAULT_OBJECT_STORE_MEMORY_PROPORTION).
G5_RAM = 32 * 2**30
G5_GPU = 24 * 2**30
OBJECT_STORE_SHARE = 0.3
# FSDnoisy18k's frame counts (the data set's documented durations at 100.2 frames per second, one frame
# per 220 samples at 22,050 Hz): pretrain 38.6 h, val (train_clean) 1,772 clips of about 5.0 s, test 1.4 h.
FSD_FRAMES = {"pretrain": 13_920_000, "val": 890_000, "test": 505_000}


# ---------------------------------------------------------------- pure parts (tests/test_full_size.py)
def frame_bytes(frames: int, dtype: str, n_mels: int = N_MELS) -> int:
    """Bytes of ``frames`` log-mel frames of ``n_mels`` bands in ``dtype``."""
    return int(frames) * n_mels * np.dtype(dtype).itemsize


def store_bytes(frames_per_split: dict[str, int], dtype: str) -> dict[str, int]:
    """Bytes per split and in all (``total``) of a store's frames in ``dtype``."""
    out = {name: frame_bytes(n, dtype) for name, n in frames_per_split.items()}
    out["total"] = sum(out.values())
    return out


def node_fit(node_peak_bytes: float, shipped_bytes: float, ram: float = G5_RAM,
             store_share: float = OBJECT_STORE_SHARE, margin: float = 0.9) -> dict[str, Any]:
    """Whether a worker node of ``ram`` bytes holds what a node measured at ``node_peak_bytes`` held,
    whose object store held ``shipped_bytes`` of store: the store must fit Ray's default object store
    (``store_share`` of the RAM), and the node's whole memory must stay under ``margin`` of the RAM
    (the OS, page cache and Ray's memory monitor, which kills workers above 95 %, need the rest)."""
    object_store = store_share * ram
    return {"object_store_bytes": object_store, "store_fits_object_store": shipped_bytes <= object_store,
            "node_fits_ram": node_peak_bytes <= margin * ram, "ram_left_bytes": ram - node_peak_bytes}


def scaled_node_peak(node_peak_bytes: float, shipped_bytes: float, target_shipped_bytes: float) -> float:
    """A node's memory with another store: the measured node less its store, plus the other store (the
    store is held once per node, in the object store; the trials map it without private copies)."""
    return node_peak_bytes - shipped_bytes + target_shipped_bytes


def planned_frames(size: str, seed: int = 0) -> dict[str, int]:
    """Frames per store split of a synthetic set, from the generator's plan alone (no audio): a clip of n
    samples at 22,050 Hz (the extractor's rate, so no resampling) gives 1 + max(n, 22,050) // 220
    frames (clips of 1 s or less are tiled to exactly 1 s)."""
    from uclser_tune.data.params import HOP, SR
    from uclser_tune.data.synth import SR as SYNTH_SR
    from uclser_tune.data.synth import _plan

    assert SYNTH_SR == SR
    out = {"pretrain": 0, "val": 0, "test": 0}
    split = {"noisy": "pretrain", "clean": "val", "test": "test"}
    for row in _plan(seed, size):
        out[split[row["split"]]] += 1 + max(int(row["seconds"] * SR), SR) // HOP
    return out


def g5_fit(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Per store (this synthetic set, FSDnoisy18k) and dtype: the worker node's memory with 2 trials (the
    measured node, its store swapped for that store), whether it fits a g5.2xlarge's RAM and default
    object store, and the GPU memory the 2 trials' resident frames take (each trial moves its pretrain
    and val frames onto the GPU, in the store's dtype)."""
    out = []
    sizes, trials = r.get("sizes"), r.get("ray", {}).get("trials", {})
    if not sizes:
        return out
    stores = {"synthetic full": sizes["frames"], "FSDnoisy18k": FSD_FRAMES}
    for name, frames in stores.items():
        for dtype in DTYPES:
            shipped = store_bytes(frames, dtype)["total"]
            row = {"store": name, "dtype": dtype, "store_bytes": shipped,
                   "gpu_frames_2_trials_bytes": 2 * (frame_bytes(frames["pretrain"], dtype)
                                                     + frame_bytes(frames["val"], dtype)),
                   "store_fits_object_store": shipped <= OBJECT_STORE_SHARE * G5_RAM}
            if m := trials.get(dtype):
                measured_store = store_bytes(sizes["frames"], dtype)["total"]
                row["node_bytes"] = scaled_node_peak(m["node_peak_pss_bytes"], measured_store, shipped)
                row.update(node_fit(row["node_bytes"], shipped))
            out.append(row)
    return out


def cpu_s(ru: Any) -> float:
    return ru.ru_utime + ru.ru_stime


def markdown(r: dict[str, Any]) -> str:
    """The results as one markdown table (figure, value, CPU seconds and load where they apply)."""
    rows = []

    def add(what: str, value: str, cpu: str = "", load: str = "") -> None:
        rows.append(f"| {what} | {value} | {cpu} | {load} |")

    def la(stage: dict[str, Any]) -> str:
        return "{:.1f} / {:.1f}".format(stage["load_before"][0], stage["load_after"][0])

    if g := r.get("generate"):
        c = g["summary"]["clips"]
        add("generate: clips noisy / clean / test", f"{c['noisy']:,} / {c['clean']:,} / {c['test']:,}")
        add("generate: audio", f"{g['summary']['seconds_total'] / 3600:.1f} h, WAVs {g['wav_bytes'] / GB:.2f} GB")
        add("generate: wall", f"{g['wall_s']:.0f} s (peak RSS {g['peak_rss_bytes'] / MB:.0f} MB)",
            f"{g['cpu_s']:.0f} s", la(g))
    if e := r.get("extract"):
        add("extract: wall", f"{e['wall_s']:.0f} s (peak RSS {e['peak_rss_bytes'] / MB:.0f} MB)",
            f"{e['cpu_s']:.0f} s", la(e))
        add("store reuse (up to date)", f"{e['reuse_wall_s']:.2f} s")
    if s := r.get("sizes"):
        f = s["frames"]
        if s.get("standin"):
            add("store used below", "stand-in: the plan's exact shape, random frames (extraction not finished)")
        else:
            add("frames from the generator's plan = extracted", "yes" if s["planned_frames"] == f else
                f"no: planned {s['planned_frames']}")
        add("frames pretrain / val / test", f"{f['pretrain']:,} / {f['val']:,} / {f['test']:,}")
        for dtype in DTYPES:
            b = s["bytes"][dtype]
            add(f"store in {dtype}: pretrain / all splits",
                f"{b['pretrain'] / GB:.2f} GB / {b['total'] / GB:.2f} GB")
        add("store on disk (float32 .npy + index)", f"{s['disk_bytes'] / GB:.2f} GB")
        if not s.get("standin"):
            add("float16 rounding: largest error", f"{s['float16_max_abs_error']:.4f} log10 units "
                f"(values {s['min']:.2f} to {s['max']:.2f})")
    if (ray := r.get("ray")) and ray.get("store") == "stand-in" and not (s or {}).get("standin"):
        add("store used below (ray stage)", "stand-in: the plan's exact shape, random frames (measured before the "
            "extraction finished)")
    if ray and "transfer" in ray:
        for dtype, t in ray["transfer"].items():
            add(f"{dtype}: into the object store (ray.put)",
                f"{t['put_s']:.2f} s for {t['object_bytes'] / GB:.2f} GB", f"{t['put_cpu_s']:.2f} s (driver)",
                f"{t['load'][0]:.1f}")
            add(f"{dtype}: onto the second node (pull)",
                f"{t['pull_s']:.2f} s, {t['object_bytes'] / GB / t['pull_s']:.2f} GB/s",
                f"{t['pull_cpu_s']:.2f} s (both nodes)", f"{t['load'][0]:.1f}")
            add(f"{dtype}: a second get on that node", f"{t['local_get_s'] * 1000:.0f} ms")
    for dtype, m in (ray or {}).get("trials", {}).items():
        add(f"{dtype}: worker node with 2 trials (ResNet-18 x1/4, CPU), peak (sum of PSS)",
            f"{m['node_peak_pss_bytes'] / GB:.2f} GB (object store on the node {m['store_shm_bytes'] / GB:.2f} GB, "
            f"trials' USS {' + '.join(f'{u / GB:.2f}' for u in m['trial_uss_bytes'])} GB)",
            f"{m['cpu_s']:.0f} s (search CLI)", f"{m['load_before'][0]:.1f} / {m['load_after'][0]:.1f}")
    head = ["| figure | value | CPU s (user+sys) | load 1 min (before / after) |", "|---|---|---|---|"]
    fit = ["", ("| store | dtype | store GB | worker node with 2 trials GB | fits 32 GiB RAM | fits the default "
           "object store (30 %) | 2 trials' frames on the GPU GB (of 24) |"), "|---|---|---|---|---|---|---|"]
    for f in g5_fit(r):
        node = f"{f['node_bytes'] / GB:.2f}" if "node_bytes" in f else "not measured"
        fit.append(f"| {f['store']} | {f['dtype']} | {f['store_bytes'] / GB:.2f} | {node} | "
                   f"{'-' if 'node_fits_ram' not in f else 'yes' if f['node_fits_ram'] else 'no'} | "
                   f"{'yes' if f['store_fits_object_store'] else 'no'} | "
                   f"{f['gpu_frames_2_trials_bytes'] / GB:.2f} |")
    return "\n".join(head + rows + (fit if len(fit) > 3 else []))


# ---------------------------------------------------------------- measuring
def load() -> list[float]:
    return list(os.getloadavg())


def measured(cmd: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> dict[str, Any]:
    """Run ``cmd`` to the end: wall seconds, user+sys CPU seconds of it and its waited-for descendants,
    and the largest peak RSS among them (``wait4``'s rusage of the child)."""
    before = load()
    started = time.perf_counter()
    with open(log or os.devnull, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode:
        tail = log.read_text()[-3000:] if log else ""
        raise RuntimeError(f"{' '.join(cmd[:6])} ... exited {proc.returncode}\n{tail}")
    return {"wall_s": wall, "cpu_s": cpu_s(ru), "cpu_user_s": ru.ru_utime, "cpu_sys_s": ru.ru_stime,
            "peak_rss_bytes": ru.ru_maxrss * 1024, "load_before": before, "load_after": load()}


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def smaps(pid: int) -> dict[str, int]:
    """Rss, Pss, private (USS) and shared-memory RSS (the object store's pages it maps) of a process, in
    bytes (``smaps_rollup`` and ``status``)."""
    out = {}
    try:
        for name in ("smaps_rollup", "status"):
            with open(f"/proc/{pid}/{name}") as f:
                for line in f:
                    key, _, rest = line.partition(":")
                    if rest.strip().endswith("kB"):
                        out[key] = int(rest.split()[0]) * 1024
    except OSError:
        return {}
    return {"rss": out.get("Rss", 0), "pss": out.get("Pss", 0), "shmem": out.get("RssShmem", 0),
            "uss": out.get("Private_Clean", 0) + out.get("Private_Dirty", 0)}


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class NodeSampler(threading.Thread):
    """Samples every process of a node (the ``ray start`` process and its descendants) every ``every_s``
    and keeps the sample with the largest sum of PSS."""

    def __init__(self, root_pid: int, descendants, every_s: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.root_pid, self.descendants, self.every_s = root_pid, descendants, every_s
        self.stop_event = threading.Event()
        self.peak: dict[str, Any] = {"pss": 0}
        self.samples = 0

    def run(self) -> None:
        while not self.stop_event.wait(self.every_s):
            procs = {pid: smaps(pid) for pid in [self.root_pid, *self.descendants(self.root_pid)]}
            procs = {pid: m for pid, m in procs.items() if m}
            total = sum(m["pss"] for m in procs.values())
            self.samples += 1
            if total > self.peak["pss"]:
                named = {pid: (cmdline(pid)[:80], m) for pid, m in procs.items()}
                self.peak = {"pss": total, "uss": sum(m["uss"] for m in procs.values()),
                             "rss": sum(m["rss"] for m in procs.values()), "processes": named, "at": time.time()}

    def stop(self) -> dict[str, Any]:
        self.stop_event.set()
        self.join()
        return self.peak


# ---------------------------------------------------------------- stages
def stage_generate(out: Path, size: str = "full") -> None:
    from uclser_tune.data.synth import generate

    summary = generate(out / "data", size=size, workers=2, progress=False)
    (out / "generate.json").write_text(json.dumps(summary))


def data_config(out: Path):
    from uclser_tune.config import DataConfig

    return DataConfig(root=str(out / "data"), cache_dir=str(out / "cache"))


def stage_extract(out: Path) -> None:
    from uclser_tune.data.store import open_store

    store = open_store(data_config(out), workers=2)
    (out / "store_path.txt").write_text(str(store.path))


def stage_standin(out: Path, seed: int = 0) -> None:
    """A store of the set's exact shape (every clip's frame count from the generator's plan, labels from
    the CSVs) with random frames, written where the search looks for the store of ``out/data`` and
    keyed to that data's fingerprint, so the search takes it as up to date. For the object-store and
    memory figures only, which depend on the store's shape and not its values: when the extraction
    cannot finish on a loaded machine."""
    import hashlib

    from uclser_tune.data.features import PARAMS
    from uclser_tune.data.fsd import SPLITS, read_dataset
    from uclser_tune.data.store import FORMAT_VERSION, cache_dir, fingerprint
    from uclser_tune.data.synth import SR, _plan

    root = (out / "data").resolve()
    size = json.loads((out / "generate.json").read_text())["size"]
    seconds = {r["fname"]: r["seconds"] for r in _plan(seed, size)}
    # the folder open_store uses for a data root (uclser_tune.data.store.open_store)
    store_dir = cache_dir(str(out / "cache")) / f"store-{root.name}-{hashlib.sha1(str(root).encode()).hexdigest()[:12]}"
    shutil.rmtree(store_dir, ignore_errors=True)
    store_dir.mkdir(parents=True)
    dataset = read_dataset(root)
    rng = np.random.default_rng(seed)
    meta_splits = {}
    for name in SPLITS:
        table = dataset.splits[name]
        lengths = np.array([1 + max(int(seconds[f] * SR), SR) // HOP_FRAMES for f in table["fname"]], np.int64)
        frames = np.lib.format.open_memmap(store_dir / f"{name}_frames.npy", "w+", np.float32, (int(lengths.sum()), N_MELS))
        for i in range(0, len(frames), 1 << 20):
            chunk = frames[i : i + (1 << 20)]
            chunk[:] = rng.standard_normal(chunk.shape, dtype=np.float32) * 1.5 - 3.0  # log10 mel power's scale
        frames.flush()
        del frames
        np.savez(store_dir / f"{name}_index.npz", offsets=np.cumsum(lengths) - lengths, lengths=lengths,
                 labels=table["label_id"].to_numpy().astype(np.int64))
        (store_dir / f"{name}_clips.json").write_text(json.dumps([str(f) for f in table["fname"]]))
        meta_splits[name] = {"clips": len(lengths), "frames": int(lengths.sum()), "skipped": 0}
    (store_dir / "skipped.csv").write_text("path,reason\n")
    meta = {"format": FORMAT_VERSION, "params": PARAMS, "fingerprint": fingerprint(root), "classes": dataset.classes,
            "mean": -3.0, "std": 1.5, "splits": meta_splits, "norm_basis": "pretrain", "skipped": 0,
            "data_root": str(root), "standin": "random frames of the plan's shape (benchmarks/full_size.py)"}
    (store_dir / "store.json").write_text(json.dumps(meta, indent=1))
    (out / "store_path.txt").write_text(str(store_dir))


def float16_error(frames: np.ndarray, chunk: int = 1 << 20) -> tuple[float, float, float]:
    """Largest |x - float16(x)| over the frames, and their minimum and maximum (read in chunks)."""
    err, lo, hi = 0.0, np.inf, -np.inf
    for i in range(0, len(frames), chunk):
        x = np.asarray(frames[i : i + chunk], dtype=np.float32)
        err = max(err, float(np.abs(x - x.astype(np.float16).astype(np.float32)).max(initial=0.0)))
        lo, hi = min(lo, float(x.min(initial=np.inf))), max(hi, float(x.max(initial=-np.inf)))
    return err, lo, hi


def store_is_standin(out: Path) -> bool:
    """Whether the store the stages use (``store_path.txt``) is the ``standin`` stage's random frames."""
    return "standin" in json.loads((Path((out / "store_path.txt").read_text()) / "store.json").read_text())


def stage_sizes(out: Path) -> dict[str, Any]:
    from uclser_tune.data.store import FeatureStore

    store = FeatureStore.load((out / "store_path.txt").read_text())
    frames = {n: len(s.frames) for n, s in store.splits.items()}
    standin = store_is_standin(out)
    err, lo, hi = (float("nan"),) * 3 if standin else (0.0, np.inf, -np.inf)
    for s in [] if standin else store.splits.values():  # random frames say nothing about float16 rounding
        e, a, b = float16_error(s.frames)
        err, lo, hi = max(err, e), min(lo, a), max(hi, b)
    return {"frames": frames, "standin": standin, "planned_frames": planned_frames(json.loads((out / "generate.json").read_text())["size"]),
            "clips": {n: len(s.lengths) for n, s in store.splits.items()},
            "bytes": {d: store_bytes(frames, d) for d in DTYPES}, "disk_bytes": du(store.path),
            "float16_max_abs_error": err, "min": lo, "max": hi, "mean": store.mean, "std": store.std,
            "fsd_bytes": {d: store_bytes(FSD_FRAMES, d) for d in DTYPES}}


def stage_transfer(out: Path, address: str, node_pids: dict[str, int]) -> None:
    """The driver (run next to the nodes): per dtype, ray.put of the store as the search ships it, then a
    task pinned to the worker node gets it (the pull), and gets it again (now local)."""
    from types import SimpleNamespace

    import psutil
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from uclser_tune.data.store import FeatureStore
    from uclser_tune.search.driver import shipped_store

    def node_cpu() -> float:
        total = 0.0
        for pid in node_pids.values():
            try:
                for p in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
                    t = p.cpu_times()
                    total += t.user + t.system + t.children_user + t.children_system
            except psutil.NoSuchProcess:
                pass
        return total

    def warm() -> None:
        import uclser_tune.data.store  # noqa: F401 - unpickling a store imports it (and torch): not the pull

    def pull(refs: list) -> tuple[float, float, int]:
        t0 = time.perf_counter()
        s = ray.get(refs[0])
        t1 = time.perf_counter()
        ray.get(refs[0])
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1, sum(sp.frames.nbytes for sp in getattr(s, "splits", {}).values())

    store = FeatureStore.load((out / "store_path.txt").read_text())
    ray.init(address=address, _node_ip_address=HEAD_IP, include_dashboard=False, configure_logging=False)
    worker = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeManagerAddress"] == WORKER_IP)
    on_worker = ray.remote(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(worker, soft=False))(pull)
    ray.get(on_worker.remote([ray.put(0)]))  # start the worker process first: its start-up is not the pull
    ray.get(ray.remote(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(worker, soft=False))(warm).remote())
    results = {}
    for dtype in DTYPES:
        shipped = shipped_store(store, SimpleNamespace(params={}, variants={}), dtype)
        nbytes = sum(s.frames.nbytes for s in shipped.splits.values())
        r0, c0 = time.perf_counter(), os.times()
        ref = ray.put(shipped)
        r1, c1 = time.perf_counter(), os.times()
        n0 = node_cpu()
        pull_s, local_s, got = ray.get(on_worker.remote([ref]))
        results[dtype] = {"object_bytes": nbytes, "put_s": r1 - r0,
                          "put_cpu_s": (c1.user - c0.user) + (c1.system - c0.system),
                          "pull_s": pull_s, "pull_cpu_s": node_cpu() - n0, "local_get_s": local_s,
                          "got_bytes": got, "load": load()}
        del ref, shipped
        time.sleep(2)  # the object's copies are freed once its last reference goes
    ray.shutdown()
    (out / "transfer.json").write_text(json.dumps(results))


TRIAL_SPACE = """\
description: Two trials at once on one node, for the full-size memory benchmark (benchmarks/full_size.py).
base:
  model: {encoder: resnet18, width: 0.25}
  train: {batch_size: 128, max_batches_per_epoch: 2}
params:
  train.tau: {float: [0.1, 0.3], log: true}
epochs: 1
asha: {grace_period: 1, reduction_factor: 2}
trials: {num_samples: 2, max_concurrent: 2}
resources: {cpu: 1}
"""


def stage_ray(out: Path, log_dir: Path, result: dict[str, Any], save) -> None:
    """Fills ``result`` step by step, calling ``save()`` after each (a long run keeps what it measured)."""
    sys.path.insert(0, str(ROOT / "cluster"))
    import local_cluster as lc

    class Cluster(lc.LocalCluster):
        """cluster/local_cluster.py's cluster with the head on HEAD_IP and the worker on WORKER_IP."""

        @property
        def address(self) -> str:
            return f"{HEAD_IP}:{self.port}"

        def _launch(self, name: str, ip: str, args: list[str], masked: list[str]):
            return super()._launch(name, HEAD_IP if name == "head" else WORKER_IP, args, masked)

    isolate = lc.namespaces_work()
    result.clear()
    result["network_namespace"] = "private" if isolate else "host"
    result["store"] = "stand-in" if store_is_standin(out) else "extracted"  # what these figures were taken on

    @contextlib.contextmanager
    def fresh_cluster():
        """A new head and worker for each measurement: Ray's object store keeps the pages it has touched
        resident after their objects are freed, so a node that once held the float32 store would count it
        in a later float16 measurement."""
        cluster = Cluster(workers=1, worker_cpus=2, head_cpus=0, port=6490 if isolate else lc.free_port(),
                          root=tempfile.mkdtemp(prefix="fs", dir="/tmp"), isolate=isolate)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()
            shutil.rmtree(cluster.root, ignore_errors=True)

    def env_of(cluster) -> dict[str, str]:
        return {**cluster.driver_env, "UCLSER_CACHE": str(out / "cache")}

    with fresh_cluster() as cluster:
        pids = {n.name: n.pid for n in cluster.nodes}
        py = [*cluster.enter, sys.executable, "-m", "benchmarks.full_size"]
        result["transfer_stage"] = measured([*py, "_stage", "transfer", "--out", str(out), "--address", cluster.address,
                                             "--node-pids", json.dumps(pids)], env_of(cluster), log_dir / "transfer.log")
        result["transfer"] = json.loads((out / "transfer.json").read_text())
        save()
    space = out / "two_trials.yaml"
    space.write_text(TRIAL_SPACE)
    result["trials"] = {}
    for dtype in DTYPES:
        with fresh_cluster() as cluster:
            worker_pid = next(n.pid for n in cluster.nodes if n.name != "head")
            idle = {p: smaps(p) for p in [worker_pid, *lc._descendants(worker_pid)]}
            sampler = NodeSampler(worker_pid, lc._descendants)
            sampler.start()
            name = f"two_trials_{dtype}"
            shutil.rmtree(out / "runs" / name, ignore_errors=True)  # a new experiment, never a resumed one
            try:
                run = measured([*cluster.enter, sys.executable, "-m", "uclser_tune.search", "--space", str(space),
                                "--data", str(out / "data"), "--name", name, "--storage-path", str(out / "runs"),
                                "--address", cluster.address, "--node-ip-address", HEAD_IP, "--gpus-per-trial", "0",
                                "--set", f"data.store_dtype={dtype}"], env_of(cluster), log_dir / f"{name}.log")
            finally:
                peak = sampler.stop()
        # the two trials: the two largest Ray worker processes by private memory
        trials = sorted((m["uss"] for cmd, m in peak["processes"].values() if "ray::" in cmd), reverse=True)[:2]
        result["trials"][dtype] = {
            **run, "node_idle_pss_bytes": sum(m.get("pss", 0) for m in idle.values()),
            "node_idle_shm_bytes": sum(m.get("shmem", 0) for m in idle.values()),
            "node_peak_pss_bytes": peak["pss"], "node_peak_uss_bytes": peak["uss"], "node_peak_rss_bytes": peak["rss"],
            "samples": sampler.samples,
            "store_shm_bytes": max((m["shmem"] for cmd, m in peak["processes"].values() if "raylet" in cmd), default=0),
            "trial_uss_bytes": trials,
            "processes": {str(pid): {"cmd": cmd, **m} for pid, (cmd, m) in peak["processes"].items()},
            "experiment": str(out / "runs" / name)}
        save()


def machine() -> dict[str, Any]:
    from uclser_tune.training.runtime import cpu_has_native_bf16

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                            check=False).stdout
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "native_bf16": cpu_has_native_bf16(),
            "ram_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "python": platform.python_version(),
            "commit": commit.strip()}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_stage"]:  # a measured child process
        p = argparse.ArgumentParser()
        p.add_argument("stage")
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--address", default="")
        p.add_argument("--node-pids", default="{}")
        p.add_argument("--size", default="full")
        a = p.parse_args(argv[1:])
        if a.stage == "transfer":
            stage_transfer(a.out, a.address, json.loads(a.node_pids))
        elif a.stage == "standin":
            stage_standin(a.out)
        elif a.stage == "generate":
            stage_generate(a.out, a.size)
        else:
            stage_extract(a.out)
        return 0
    ap = argparse.ArgumentParser(prog="python -m benchmarks.full_size", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="data, store and experiments go here (about 8 GB)")
    ap.add_argument("--json", type=Path, default=Path("results/full_size/full_size.json"))
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    ap.add_argument("--size", default="full", choices=["tiny", "small", "full"],
                    help="the synthetic set's size (full: FSDnoisy18k-sized; tiny: a quick check of this script)")
    a = ap.parse_args(argv)
    a.out = a.out.resolve()
    results: dict[str, Any] = json.loads(a.json.read_text()) if a.json.exists() else {}
    results["machine"], results["size"] = machine(), a.size
    log_dir = a.out / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    py = [sys.executable, "-m", "benchmarks.full_size", "_stage"]

    def save() -> None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(results, indent=1) + "\n")

    if "generate" in a.stages:
        shutil.rmtree(a.out / "data", ignore_errors=True)
        shutil.rmtree(a.out / "cache", ignore_errors=True)
        run = measured([*py, "generate", "--out", str(a.out), "--size", a.size], log=log_dir / "generate.log")
        results["generate"] = {**run, "summary": json.loads((a.out / "generate.json").read_text()),
                               "wav_bytes": du(a.out / "data")}
        save()
    if "standin" in a.stages:
        run = measured([*py, "standin", "--out", str(a.out)], log=log_dir / "standin.log")
        results["standin"] = run
        save()
    if "extract" in a.stages:
        shutil.rmtree(a.out / "cache", ignore_errors=True)
        run = measured([*py, "extract", "--out", str(a.out)], log=log_dir / "extract.log")
        reuse = measured([*py, "extract", "--out", str(a.out)], log=log_dir / "reuse.log")
        results["extract"] = {**run, "reuse_wall_s": reuse["wall_s"], "reuse_cpu_s": reuse["cpu_s"]}
        save()
    if "sizes" in a.stages:
        results["sizes"] = {**stage_sizes(a.out), "load": load()}
        save()
    if "ray" in a.stages:
        results["ray"] = {}
        stage_ray(a.out, log_dir, results["ray"], save)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
