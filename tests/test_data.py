"""Synthetic generator, FSDnoisy18k reader, log-mel extraction and the feature store."""

import csv
import hashlib
import json
import os
import sys
from pathlib import Path

import children
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from uclser_tune.data.features import EPS, HOP, N_FFT, N_MELS, SR, WIN, logmel, preprocess
from uclser_tune.data.fsd import DatasetError, read_dataset
from uclser_tune.data.store import FeatureStore, build_store
from uclser_tune.data.synth import CLASSES, JITTER, LABEL_NOISE, SourceDraws, _plan, generate


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate(root, seed=3, size="tiny", progress=False)
    return root


def test_synth_layout_and_content(synth):
    train = pd.read_csv(synth / "FSDnoisy18k.meta" / "train.csv")
    test = pd.read_csv(synth / "FSDnoisy18k.meta" / "test.csv")
    assert list(train.columns) == ["fname", "label", "aso_id", "manually_verified", "noisy_small"]
    assert list(test.columns) == ["fname", "label", "aso_id"]
    assert len(CLASSES) == 20
    clean = train[train.manually_verified == 1]
    assert set(clean.label) == set(test.label) == set(CLASSES)
    assert 0.08 < len(clean) / len(train) < 0.25
    for fname in list(train.fname[:20]) + list(test.fname[:5]):
        folder = "audio_train" if fname in set(train.fname) else "audio_test"
        info = sf.info(synth / f"FSDnoisy18k.{folder}" / fname)
        assert info.samplerate == SR and 0.29 <= info.duration <= 10.01
    info = json.loads((synth / "FSDnoisy18k.doc" / "synth_info.json").read_text())
    assert abs(info["label_noise_rate_realised"] - LABEL_NOISE) < 0.1


def test_synth_is_deterministic(synth, tmp_path):
    generate(tmp_path / "a", seed=3, size="tiny", progress=False)
    assert digest(tmp_path / "a") == digest(synth)
    generate(tmp_path / "b", seed=4, size="tiny", progress=False)
    assert digest(tmp_path / "b") != digest(synth)


def test_synth_v3_events_of_a_clip_are_one_source_and_clips_are_many():
    """Two events of one clip draw their parameters around the clip's source (sd JITTER of the range);
    two clips' sources are independent draws over the whole range. Waveform noise is fresh per event."""
    fresh = np.random.default_rng(0)

    def params(source: int) -> np.ndarray:
        d = SourceDraws(source, fresh)
        return np.concatenate([[d.uniform(110, 440)], d.uniform(0.3, 1.0, 8)])

    within = np.array([params(7) - params(7) for _ in range(200)])
    between = np.array([params(s) - params(s + 1000) for s in range(200)])
    assert within[:, 0].std() == pytest.approx(np.sqrt(2) * JITTER * 330, rel=0.2)
    assert between[:, 0].std() > 3 * within[:, 0].std()
    d1, d2 = SourceDraws(7, fresh), SourceDraws(7, fresh)
    assert not np.array_equal(d1.standard_normal(100), d2.standard_normal(100))  # noise is fresh
    long1, long2 = d1.uniform(0, 1, 100), d2.uniform(0, 1, 100)
    assert long1.std() > 0.2  # a long draw is noise, not a jittered parameter
    assert not np.array_equal(long1, long2)  # ... and fresh, not the source's sequence (which it would shift)
    seconds = np.array([r["seconds"] for r in _plan(0, "full")])
    assert 0.03 < (seconds <= 1).mean() < 0.12 and 2.5 < np.median(seconds) < 3.5 and seconds.max() <= 30


def test_reader_splits(synth):
    ds = read_dataset(synth)
    assert ds.classes == sorted(CLASSES)
    assert len(ds.splits["pretrain"]) == 200 and len(ds.splits["val"]) == 60 and len(ds.splits["test"]) == 60
    assert all(Path(p).exists() for p in ds.splits["test"]["path"])
    paths = [set(ds.splits[s]["path"]) for s in ("pretrain", "val", "test")]
    assert not (paths[0] & paths[1] or paths[0] & paths[2] or paths[1] & paths[2])  # no clip in two splits
    train = pd.read_csv(synth / "FSDnoisy18k.meta" / "train.csv")
    verified = set(train.fname[train.manually_verified == 1])
    assert set(ds.splits["val"]["fname"]) == verified and not verified & set(ds.splits["pretrain"]["fname"])


def copy_layout(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("damage, words", [
    (lambda r: (r / "FSDnoisy18k.audio_test").rename(r / "x"), ["missing folder", "audio_test"]),
    (lambda r: (r / "FSDnoisy18k.meta" / "test.csv").unlink(), ["missing metadata file", "test.csv"]),
    (lambda r: pd.read_csv(r / "FSDnoisy18k.meta" / "train.csv").drop(columns="manually_verified").to_csv(
        r / "FSDnoisy18k.meta" / "train.csv", index=False), ["missing column", "manually_verified"]),
    (lambda r: pd.read_csv(r / "FSDnoisy18k.meta" / "test.csv").assign(label="Theremin").to_csv(
        r / "FSDnoisy18k.meta" / "test.csv", index=False), ["not seen in train", "Theremin"]),
])
def test_reader_errors_name_the_problem(synth, tmp_path, damage, words):
    root = copy_layout(synth, tmp_path / "d")
    damage(root)
    with pytest.raises(DatasetError) as err:
        read_dataset(root)
    for w in words:
        assert w in str(err.value)
    with pytest.raises(DatasetError, match="does not exist"):
        read_dataset(tmp_path / "nowhere")


# --- log-mel against an independent slow reference --------------------------------------------


def slaney_mel_filters(sr, n_fft, n_mels, fmin, fmax):
    """Slaney-scale triangular filters, no area normalisation, written from the formulas."""
    def hz_to_mel(f):
        f = np.asarray(f, float)
        lin = f / (200.0 / 3)
        log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
        return np.where(f >= 1000.0, log, lin)

    def mel_to_hz(m):
        m = np.asarray(m, float)
        lin = m * (200.0 / 3)
        log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
        return np.where(m >= 15.0, log, lin)

    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    bins = np.arange(n_fft // 2 + 1) * sr / n_fft
    w = np.zeros((n_mels, len(bins)))
    for m in range(n_mels):
        lo, c, hi = edges[m], edges[m + 1], edges[m + 2]
        for k, f in enumerate(bins):
            w[m, k] = max(0.0, min((f - lo) / (c - lo), (hi - f) / (hi - c)))
    return w


def slow_logmel(y22k):
    y = y22k + EPS
    pad = N_FFT // 2
    y = np.pad(y, pad, mode="reflect")
    n = np.arange(WIN)
    window = 0.54 - 0.46 * np.cos(2 * np.pi * n / WIN)  # periodic Hamming
    full = np.zeros(N_FFT)
    full[(N_FFT - WIN) // 2 : (N_FFT - WIN) // 2 + WIN] = window  # centred in n_fft
    frames = 1 + (len(y) - N_FFT) // HOP
    mel = slaney_mel_filters(SR, N_FFT, N_MELS, 50.0, 10_500.0)
    out = []
    for t in range(frames):
        spec = np.fft.rfft(y[t * HOP : t * HOP + N_FFT] * full)
        out.append(np.log10(mel @ (np.abs(spec) ** 2) + EPS))
    return np.array(out)


@pytest.mark.parametrize("seconds, sr", [(2.3, 22050), (0.4, 22050), (1.7, 44100), (3.0, 16000)])
def test_logmel_equals_slow_reference(seconds, sr):
    rng = np.random.default_rng(int(seconds * 10))
    t = np.arange(int(seconds * sr)) / sr
    y = 0.3 * np.sin(2 * np.pi * 440 * t * (1 + t)) + 0.05 * rng.normal(size=len(t))
    feats = logmel(y, sr)
    y22 = preprocess(y, sr)  # checked on its own against the analytic signal below; here the STFT and mel path
    assert feats.shape == (1 + len(y22) // HOP, 96) and feats.dtype == np.float32
    assert feats.shape[0] >= 101
    np.testing.assert_allclose(feats, slow_logmel(y22), atol=1e-4)


@pytest.mark.parametrize("sr", [44100, 16000, 22050])
def test_preprocess_resamples_centres_and_scales_against_the_analytic_signal(sr):
    """A band-limited signal with a DC offset, sampled at ``sr``, must come out as the same signal
    sampled at 22,050 Hz, centred and divided by (max|y| + 0.005): written from the formula, no resampler."""
    def signal(rate, n):
        t = np.arange(n) / rate
        return 0.2 + np.sin(2 * np.pi * 440 * t) + 0.5 * np.sin(2 * np.pi * 1234 * t + 0.3)

    n = round(2.3 * sr)  # 2.3 s is a whole number of samples at 22,050 Hz too
    y = preprocess(signal(sr, n), sr)
    expected = signal(SR, round(n * SR / sr))
    expected -= expected.mean()
    expected /= np.abs(expected).max() + 0.005
    assert len(y) == len(expected)
    edge = 200  # the resampler's filter reaches past both ends of the clip
    np.testing.assert_allclose(y[edge:-edge], expected[edge:-edge], atol=2e-3)


def test_preprocess_tiles_short_clips_and_scales():
    y = preprocess(np.ones(1000) + np.arange(1000) * 1e-3, SR)
    assert len(y) == SR and abs(y[:1000].mean()) < 1e-9 and np.abs(y).max() < 1.0
    assert np.allclose(y[:1000], y[1000:2000])


# --- the feature store -------------------------------------------------------------------------


def test_store_build_reuse_rebuild_and_skip(synth, tmp_path):
    root = copy_layout(synth, tmp_path / "d")
    train = root / "FSDnoisy18k.audio_train"
    clean = pd.read_csv(root / "FSDnoisy18k.meta" / "train.csv")
    bad = clean.fname[clean.manually_verified == 1].iloc[:3].tolist()
    (train / bad[0]).write_bytes(b"")  # empty
    (train / bad[1]).write_text("this is not audio")  # not audio
    (train / bad[2]).write_bytes((train / bad[2]).read_bytes()[:30])  # truncated header
    store = build_store(root, tmp_path / "store", workers=2)
    assert store.skipped == 3
    skipped = list(csv.DictReader((tmp_path / "store" / "skipped.csv").read_text().splitlines()))
    assert sorted(Path(r["path"]).name for r in skipped) == sorted(bad)
    val = store.splits["val"]
    assert len(val.lengths) == 57 and not set(bad) & set(val.clip_ids)
    assert val.frames.shape == (int(val.lengths.sum()), 96) and isinstance(val.frames, np.memmap)
    assert (store.splits["pretrain"].lengths >= 101).all()
    pre = np.asarray(store.splits["pretrain"].frames, dtype=np.float64)
    assert store.mean == pytest.approx(pre.mean()) and store.std == pytest.approx(pre.std())

    stamp = (tmp_path / "store" / "store.json").stat().st_mtime_ns
    assert build_store(root, tmp_path / "store").mean == store.mean  # reused: nothing rewritten
    assert (tmp_path / "store" / "store.json").stat().st_mtime_ns == stamp
    fname = clean.fname[clean.manually_verified == 0].iloc[0]
    os.utime(train / fname, ns=(1, 1))  # the data changed → rebuilt
    build_store(root, tmp_path / "store")
    assert (tmp_path / "store" / "store.json").stat().st_mtime_ns != stamp

    # after the skipped files every clip keeps its own label and its own frames (logmel of its file)
    label_of = dict(zip(clean.fname, clean.label))
    assert [store.classes[c] for c in val.labels] == [label_of[f] for f in val.clip_ids]
    for i in (0, 5, len(val.lengths) - 1):
        ref = logmel(*sf.read(train / val.clip_ids[i]))
        np.testing.assert_array_equal(val.frames[val.offsets[i] : val.offsets[i] + val.lengths[i]], ref)


def mini_dataset(root: Path) -> Path:
    """Eight one-second tones in the FSDnoisy18k layout (4 noisy, 2 verified train clips, 2 test clips):
    a data set that extracts in a second, for the store's bookkeeping tests."""
    rows = [("a.wav", "low", 0), ("b.wav", "high", 0), ("c.wav", "low", 0), ("d.wav", "high", 0),
            ("e.wav", "low", 1), ("f.wav", "high", 1)]
    for folder in ("audio_train", "audio_test", "meta"):
        (root / f"FSDnoisy18k.{folder}").mkdir(parents=True)
    t = np.arange(SR) / SR
    for i, (name, label, _) in enumerate(rows + [("g.wav", "low", 0), ("h.wav", "high", 0)]):
        folder = "audio_train" if i < len(rows) else "audio_test"
        freq = (300 if label == "low" else 3000) * (1 + 0.05 * i)
        sf.write(root / f"FSDnoisy18k.{folder}" / name, 0.5 * np.sin(2 * np.pi * freq * t), SR)
    pd.DataFrame([{"fname": n, "label": lab, "aso_id": "x", "manually_verified": v, "noisy_small": 1 - v}
                  for n, lab, v in rows]).to_csv(root / "FSDnoisy18k.meta" / "train.csv", index=False)
    pd.DataFrame([{"fname": "g.wav", "label": "low", "aso_id": "x"}, {"fname": "h.wav", "label": "high", "aso_id": "x"}]
                 ).to_csv(root / "FSDnoisy18k.meta" / "test.csv", index=False)
    return root


def test_store_is_rebuilt_when_the_extraction_parameters_change(tmp_path, monkeypatch):
    from uclser_tune.data import features, store

    root = mini_dataset(tmp_path / "d")
    build_store(root, tmp_path / "s", workers=1)
    stamp = (tmp_path / "s" / "store.json").stat().st_mtime_ns
    build_store(root, tmp_path / "s", workers=1)
    assert (tmp_path / "s" / "store.json").stat().st_mtime_ns == stamp
    monkeypatch.setitem(features.PARAMS, "hop", 221)
    build_store(root, tmp_path / "s", workers=1)
    assert json.loads((tmp_path / "s" / "store.json").read_text())["params"]["hop"] == 221  # rebuilt
    stamp = (tmp_path / "s" / "store.json").stat().st_mtime_ns
    monkeypatch.setattr(store, "FORMAT_VERSION", store.FORMAT_VERSION + 1)
    build_store(root, tmp_path / "s", workers=1)
    assert (tmp_path / "s" / "store.json").stat().st_mtime_ns != stamp


def test_an_interrupted_rebuild_keeps_the_old_store_and_leaves_no_temporary_folder(tmp_path, monkeypatch):
    from uclser_tune.data import store

    root = mini_dataset(tmp_path / "d")
    old = build_store(root, tmp_path / "s", workers=1)
    os.utime(root / "FSDnoisy18k.audio_train" / "a.wav", ns=(1, 1))  # the data changed → a rebuild starts
    real, seen = store.extract_split, []

    def interrupted(paths, workers=2, desc=""):
        seen.append(sorted(p.name for p in tmp_path.glob(".s.tmp*")))  # the build's temporary folder
        if len(seen) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the second split is extracted
        return real(paths, workers, desc)

    monkeypatch.setattr(store, "extract_split", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_store(root, tmp_path / "s", workers=1)
    assert seen == [[f".s.tmp{os.getpid()}"]] * 2  # the temporary folder existed during the build...
    assert not list(tmp_path.glob(".s.tmp*"))  # ...and is gone
    assert FeatureStore.load(tmp_path / "s").mean == old.mean  # the old store is untouched


def test_concurrent_open_store_builds_once(tmp_path, monkeypatch):
    """Two threads open the same new store. The first to take the lock builds it; it starts extracting
    only once the second is waiting on the lock, so without the lock both would build."""
    import fcntl
    import threading

    from uclser_tune.config import DataConfig
    from uclser_tune.data import store

    root = mini_dataset(tmp_path / "d")
    real_flock, real_extract = fcntl.flock, store.extract_split
    waiting, extracted = threading.Semaphore(0), []

    def flock(f, op):
        if op == fcntl.LOCK_EX:
            waiting.release()
        return real_flock(f, op)

    def extract(paths, workers=2, desc=""):
        if not extracted:
            assert waiting.acquire(timeout=30) and waiting.acquire(timeout=30), "the second opener never came"
        extracted.append(desc)
        return real_extract(paths, workers, desc)

    monkeypatch.setattr(fcntl, "flock", flock)
    monkeypatch.setattr(store, "extract_split", extract)
    cfg = DataConfig(root=str(root), cache_dir=str(tmp_path / "cache"))
    results = [None, None]

    def open_it(i):
        results[i] = store.open_store(cfg, workers=1)

    threads = [threading.Thread(target=open_it, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert extracted == ["log-mel pretrain", "log-mel val", "log-mel test"]  # one build, not two
    assert results[0].mean == results[1].mean and results[0].path == results[1].path


def test_shareable_store_pickles_its_frames_out_of_band(tiny_store):
    """Ray's object store keeps out-of-band buffers in shared memory: the shareable store's frames must
    travel that way (one copy per node), the memory-mapped ones are pickled into the payload."""
    import pickle

    frames_bytes = sum(s.frames.nbytes for s in tiny_store.splits.values())
    buffers = []
    payload = pickle.dumps(tiny_store.shareable(), protocol=5, buffer_callback=buffers.append)
    assert len(payload) < frames_bytes / 10 and sum(b.raw().nbytes for b in buffers) >= frames_bytes
    inline = []
    assert len(pickle.dumps(tiny_store, protocol=5, buffer_callback=inline.append)) > frames_bytes
    shared = tiny_store.shareable()
    for name, split in tiny_store.splits.items():
        assert type(shared.splits[name].frames) is np.ndarray
        np.testing.assert_array_equal(shared.splits[name].frames, split.frames)
        assert shared.splits[name].clip_ids == split.clip_ids


def test_store_to_torch_and_subset(tiny_store):
    val = tiny_store.splits["val"]
    clips = val.to_torch()
    assert clips.frames.dtype == torch.float32 and len(clips) == len(val.lengths)
    half = tiny_store.splits["val"].to_torch(dtype=torch.float16)
    assert half.frames.dtype == torch.float16
    sub = clips.subset([3, 0])
    assert sub.clip_ids == [val.clip_ids[3], val.clip_ids[0]]
    assert torch.equal(sub.frames[: int(sub.lengths[0])],
                       clips.frames[int(clips.offsets[3]) : int(clips.offsets[3] + clips.lengths[3])])
    assert FeatureStore.load(tiny_store.path).mean == tiny_store.mean


def test_cli_features_and_errors(synth, tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    bad = children.run([sys.executable, "-m", "uclser_tune.data", "features", str(tmp_path / "nope"), "--out",
                        str(tmp_path / "s")], 120, "the refusal of a missing folder", env=env)
    assert bad.returncode == 2 and "does not exist" in bad.stderr
    out = children.run([sys.executable, "-m", "uclser_tune.data", "synth", "--help"], 120, "synth --help")
    assert out.returncode == 0 and "--size" in out.stdout


@pytest.mark.skipif("DRUM_HITS_DIR" not in os.environ,
                    reason="DRUM_HITS_DIR not set (.ci/run sets it; build: bash ../shared/data/build_drum_hits.sh DIR)")
def test_real_drum_hits_load(tmp_path):
    """Real audio, and the only store normalised on its val split (a curated set: no noisy clips). Run
    by CI, which builds the set; where DRUM_HITS_DIR is set but the set is missing, this fails."""
    drums = Path(os.environ["DRUM_HITS_DIR"])
    assert (drums / "FSDnoisy18k.meta" / "train.csv").exists(), f"no drum set in DRUM_HITS_DIR={drums}"
    store = build_store(drums, tmp_path / "drums")
    assert len(store.splits["pretrain"].lengths) == 0  # curated: every train row is verified
    val = store.splits["val"]
    assert len(val.lengths) > 100 and len(store.classes) >= 5
    assert json.loads((tmp_path / "drums" / "store.json").read_text())["norm_basis"] == "val"
    frames = np.asarray(val.frames, dtype=np.float64)
    assert store.mean == pytest.approx(frames.mean()) and store.std == pytest.approx(frames.std())
    assert (val.lengths >= 101).all() and np.isfinite(frames).all()
    train = pd.read_csv(drums / "FSDnoisy18k.meta" / "train.csv")
    label_of = dict(zip(train.fname.astype(str), train.label))
    assert [store.classes[c] for c in val.labels] == [label_of[f] for f in val.clip_ids]


def test_store_never_deletes_a_folder_that_is_not_a_store(synth, tmp_path):
    victim = tmp_path / "mine"
    victim.mkdir()
    (victim / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="not a feature store"):
        build_store(synth, victim)
    assert (victim / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("column, value, words", [
    ("manually_verified", "yes", ["manually_verified must be 0 or 1"]),
    ("manually_verified", 2, ["manually_verified must be 0 or 1"]),
    ("label", None, ["empty label"]),
])
def test_reader_rejects_bad_cells(synth, tmp_path, column, value, words):
    root = copy_layout(synth, tmp_path / "d")
    train = pd.read_csv(root / "FSDnoisy18k.meta" / "train.csv")
    train[column] = train[column].astype(object)
    train.loc[3, column] = value
    train.to_csv(root / "FSDnoisy18k.meta" / "train.csv", index=False)
    with pytest.raises(DatasetError, match=words[0]):
        read_dataset(root)


def test_stereo_in_either_layout_and_boolean_subset(clips):
    rng = np.random.default_rng(0)
    y = rng.normal(size=(2, 30000))
    np.testing.assert_allclose(logmel(y, SR), logmel(y.T, SR))
    np.testing.assert_allclose(logmel(y, SR), logmel(y.mean(0), SR))
    mask = torch.tensor([True, False, True, False, False, True])
    assert clips.subset(mask).clip_ids == ["c0", "c2", "c5"]
