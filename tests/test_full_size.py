"""The full-size benchmark's pure parts (benchmarks/full_size.py): byte counts, the float16 rounding
error, the node-fit arithmetic and the table. No test runs the full set."""

from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import full_size as fs


def test_frame_bytes_is_frames_times_bands_times_itemsize():
    assert fs.frame_bytes(1, "float32") == 96 * 4
    assert fs.frame_bytes(1000, "float16") == 1000 * 96 * 2
    # FSDnoisy18k's pretrain split: about 13.9 M frames, 5.3 GB in float32 and 2.7 GB in float16
    assert fs.frame_bytes(13_900_000, "float32") == pytest.approx(5.34e9, rel=1e-3)
    assert fs.frame_bytes(13_900_000, "float16") == pytest.approx(2.67e9, rel=1e-3)


def test_store_bytes_match_real_arrays():
    frames = {"pretrain": 1234, "val": 56, "test": 7}
    for dtype in ("float32", "float16"):
        b = fs.store_bytes(frames, dtype)
        real = {n: np.zeros((k, 96), dtype).nbytes for n, k in frames.items()}
        assert {n: b[n] for n in frames} == real
        assert b["total"] == sum(real.values())


def test_float16_error_against_a_direct_computation():
    rng = np.random.default_rng(0)
    x = rng.normal(-3, 2, (5000, 96)).astype(np.float32)
    err, lo, hi = fs.float16_error(x, chunk=777)  # chunks that do not divide the rows
    assert err == float(np.abs(x - x.astype(np.float16).astype(np.float32)).max())
    assert (lo, hi) == (float(x.min()), float(x.max()))
    assert 0 < err <= 2.0 ** -11 * np.abs(x).max()  # half a float16 step at the largest magnitude


def test_node_fit_and_scaling():
    gib = 2**30
    fit = fs.node_fit(node_peak_bytes=10 * gib, shipped_bytes=3 * gib)
    assert fit["object_store_bytes"] == pytest.approx(0.3 * 32 * gib)
    assert fit["store_fits_object_store"] and fit["node_fits_ram"]
    assert fit["ram_left_bytes"] == 22 * gib
    assert not fs.node_fit(node_peak_bytes=10 * gib, shipped_bytes=10 * gib)["store_fits_object_store"]
    assert not fs.node_fit(node_peak_bytes=30 * gib, shipped_bytes=3 * gib)["node_fits_ram"]
    # the store is held once per node: swapping it changes the node by the difference only
    assert fs.scaled_node_peak(10 * gib, 3 * gib, 5 * gib) == 12 * gib


def test_markdown_names_every_figure():
    ru = {"load_before": [3.0, 2, 1], "load_after": [4.0, 2, 1]}
    results = {
        "generate": {"summary": {"clips": {"noisy": 15820, "clean": 1780, "test": 940}, "seconds_total": 72000.0},
                     "wav_bytes": 3.2e9, "wall_s": 300.0, "cpu_s": 550.0, "peak_rss_bytes": 4e8, **ru},
        "extract": {"wall_s": 600.0, "cpu_s": 1100.0, "peak_rss_bytes": 6e9, "reuse_wall_s": 0.5, **ru},
        "sizes": {"frames": {"pretrain": 6_000_000, "val": 700_000, "test": 380_000},
                  "planned_frames": {"pretrain": 6_000_000, "val": 700_000, "test": 380_000},
                  "bytes": {d: fs.store_bytes({"pretrain": 6_000_000, "val": 700_000, "test": 380_000}, d)
                            for d in fs.DTYPES},
                  "disk_bytes": 2.7e9, "float16_max_abs_error": 0.002, "min": -8.0, "max": 1.5},
        "ray": {"transfer": {"float16": {"put_s": 1.0, "object_bytes": 1.36e9, "put_cpu_s": 0.9, "pull_s": 2.0,
                                         "pull_cpu_s": 3.0, "local_get_s": 0.01, "load": [5.0, 0, 0]}},
                "trials": {"float16": {"node_peak_pss_bytes": 4e9, "store_shm_bytes": 1.36e9,
                                       "trial_uss_bytes": [1.1e9, 1.0e9], "cpu_s": 200.0, **ru}}},
    }
    table = fs.markdown(results)
    lines = table.splitlines()
    assert lines[0].startswith("| figure | value | CPU s")
    figures = lines[: lines.index("")]
    assert all(line.count("|") == 5 for line in figures)
    assert all(line.count("|") == 8 for line in lines[len(figures) + 1 :])
    assert "| frames from the generator's plan = extracted | yes |" in table
    for needle in ("15,820 / 1,780 / 940", "20.0 h", "550 s", "1100 s", "6,000,000", "2.30 GB",  # f32 pretrain
                   "1.15 GB", "0.0020 log10", "0.68 GB/s", "4.00 GB", "1.10 + 1.00", "3.0 / 4.0"):
        assert needle in table, needle
    assert "stand-in" not in table
    # ray-stage figures taken on a stand-in store before the extraction finished say so
    standin = fs.markdown({**results, "ray": {**results["ray"], "store": "stand-in"}})
    assert "| store used below (ray stage) | stand-in:" in standin


def test_cpu_s_sums_user_and_system():
    assert fs.cpu_s(SimpleNamespace(ru_utime=1.5, ru_stime=0.25)) == 1.75


def test_planned_frames_match_the_extractor_clip_by_clip(tmp_path):
    """The plan's frame count of a clip is what the extractor gives for the clip's WAV: the shortest
    clips of the tiny plan (tiled to 1 s) and two longer ones, rendered and extracted."""
    from uclser_tune.data.features import file_logmel
    from uclser_tune.data.synth import SR, _plan, _write_clip

    rows = sorted(_plan(0, "tiny"), key=lambda r: r["seconds"])
    for row in rows[:2] + rows[len(rows) // 2 : len(rows) // 2 + 1] + rows[-1:]:
        _write_clip((tmp_path, 0, row))
        frames = len(file_logmel(tmp_path / row["fname"]))
        assert frames == 1 + max(int(row["seconds"] * SR), SR) // 220, row
    assert rows[0]["seconds"] < 1.0  # the tiling branch is exercised
    planned = fs.planned_frames("tiny")
    split = {"noisy": "pretrain", "clean": "val", "test": "test"}
    for name in planned:
        assert planned[name] == sum(1 + max(int(r["seconds"] * SR), SR) // 220 for r in rows
                                    if split[r["split"]] == name)


def test_g5_fit_swaps_the_store_and_counts_two_trials_frames_on_the_gpu():
    frames = {"pretrain": 6_000_000, "val": 700_000, "test": 380_000}
    f32 = fs.store_bytes(frames, "float32")["total"]
    r = {"sizes": {"frames": frames},
         "ray": {"trials": {"float32": {"node_peak_pss_bytes": f32 + 3e9, "store_shm_bytes": f32,
                                        "trial_uss_bytes": [1e9, 1e9], "cpu_s": 1.0,
                                        "load_before": [1.0], "load_after": [1.0]}}}}
    rows = {(x["store"], x["dtype"]): x for x in fs.g5_fit(r)}
    assert len(rows) == 4
    mine = rows[("synthetic full", "float32")]
    assert mine["node_bytes"] == pytest.approx(f32 + 3e9) and mine["node_fits_ram"]
    assert mine["gpu_frames_2_trials_bytes"] == 2 * 6_700_000 * 96 * 4
    fsd = rows[("FSDnoisy18k", "float32")]
    fsd_store = sum(fs.FSD_FRAMES.values()) * 96 * 4
    assert fsd["store_bytes"] == fsd_store and fsd["node_bytes"] == pytest.approx(fsd_store + 3e9)
    assert "node_bytes" not in rows[("FSDnoisy18k", "float16")]  # float16 trials were not measured here
    assert rows[("FSDnoisy18k", "float16")]["store_fits_object_store"]
    table = fs.markdown({**r, "sizes": {**r["sizes"], "planned_frames": frames, "disk_bytes": 1e9, "min": -8.0,
                                        "max": 2.0, "float16_max_abs_error": 0.002,
                                        "bytes": {d: fs.store_bytes(frames, d) for d in fs.DTYPES}}})
    assert "fits 32 GiB RAM" in table and "| FSDnoisy18k | float16 | 2.94 | not measured | - | yes |" in table
