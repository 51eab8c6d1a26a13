import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mitigate import scores
from mitigate.detect import AttractorDetector
from mitigate.extract import extract_images
from mitigate.models import SmallCNN
from mitigate.scale import MIN_STRATUM_SHARE, N_STRATA, stratified_sample

from conftest import planted_blobs

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "workers" / "extract_two_processes.py"


def flagged_mask(detector, n):
    mask = np.zeros(n, dtype=bool)
    for attractor in detector.attractors_:
        mask[attractor.members] = True
    return mask


def test_sampled_path_finds_planted_attractor():
    embeddings, labels, predictions, planted = planted_blobs(seed=2, n_per_class=3000)
    detector = AttractorDetector(large_n_threshold=5000, sample_size=2000, random_state=0)
    detector.fit(embeddings, labels, predictions)

    settings = detector.settings_
    assert settings["sample"].startswith("stratified")
    assert 2000 <= settings["sample_size"] <= 2000 + N_STRATA * settings["min_rows_per_stratum"]
    assert settings["n_rows_placed"] == len(labels) - settings["sample_size"]
    assert settings["n_rows_without_neighbours"] == 0
    assert len(detector.attractors_) == 1
    result = scores.precision_recall_f1(flagged_mask(detector, len(labels)), planted)
    assert result["precision"] >= 0.95
    assert result["recall"] >= 0.95
    assert np.isfinite(detector.coords_).all()


def test_placed_rows_join_own_blob():
    # Two tight, far-apart blobs: every placed row must land in its own blob's
    # cluster. An approximate neighbour search can miss a few such rows.
    from mitigate.scale import cluster_by_sample

    rng = np.random.default_rng(4)
    centres = np.zeros((2, 8))
    centres[1, 0] = 50.0
    truth = np.repeat([0, 1], 3000)
    space = (centres[truth] + rng.normal(scale=0.5, size=(truth.size, 8))).astype(np.float32)

    def two_clusters(coords):
        from sklearn.cluster import KMeans
        return KMeans(n_clusters=2, n_init=4, random_state=0).fit_predict(coords).astype(np.int64)

    result = cluster_by_sample(space, cluster=two_clusters, sample_size=600, random_state=0)
    placed = np.setdiff1d(np.arange(truth.size), result.sample_rows)
    sample_ids, sample_truth = result.cluster_ids[result.sample_rows], truth[result.sample_rows]
    sample_cluster_of_blob = {b: np.bincount(sample_ids[sample_truth == b]).argmax() for b in (0, 1)}
    expected = np.array([sample_cluster_of_blob[b] for b in truth[placed]])
    np.testing.assert_array_equal(result.cluster_ids[placed], expected)
    assert result.settings["neighbour_search"].startswith("exact")


def test_detector_rejects_tiny_sample_size():
    with pytest.raises(ValueError, match="sample_size must be at least 64, got 10"):
        AttractorDetector(sample_size=10).fit(np.zeros((10, 2)))


def test_stratified_sample_keeps_rare_region():
    rng = np.random.default_rng(0)
    common = rng.normal(size=(20_000, 8))
    rare = rng.normal(loc=40.0, scale=0.1, size=(20, 8))
    space = np.vstack([common, rare]).astype(np.float32)
    sample = stratified_sample(space, sample_size=1000, random_state=0)

    floor = int(MIN_STRATUM_SHARE * 1000 / N_STRATA)
    n_rare_drawn = int(np.sum(sample.rows >= 20_000))
    # Proportional allocation alone would draw about one of the 20 rare rows.
    assert n_rare_drawn >= min(20, floor)
    assert np.all(np.diff(sample.rows) > 0)


def test_stratified_sample_same_seed_same_rows():
    space = np.random.default_rng(1).normal(size=(5000, 4)).astype(np.float32)
    first = stratified_sample(space, sample_size=500, random_state=3).rows
    second = stratified_sample(space, sample_size=500, random_state=3).rows
    np.testing.assert_array_equal(first, second)


def test_total_variance_blocks_match_direct(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(40_000, 6)) * 100 + 1e4).astype(np.float32)
    path = tmp_path / "x.npy"
    np.save(path, x)
    x64 = x.astype(np.float64)
    expected = float(np.sum((x64 - x64.mean(axis=0)) ** 2) / x.shape[0])
    assert scores.total_variance(x) == pytest.approx(expected, rel=1e-12)
    assert scores.total_variance(np.load(path, mmap_mode="r")) == pytest.approx(expected, rel=1e-12)


def small_model_and_images(n_images=37):
    torch.manual_seed(0)
    model = SmallCNN(embedding_dim=8)
    images = np.random.default_rng(0).random((n_images, 1, 28, 28), dtype=np.float32)
    return model, images


def test_extract_streams_to_npy(tmp_path):
    model, images = small_model_and_images()
    expected, expected_predictions, _ = extract_images(model, images, layer="penultimate", batch_size=5)
    path = tmp_path / "embeddings.npy"
    streamed, predictions, _ = extract_images(model, images, layer="penultimate", batch_size=5, out=path)

    assert isinstance(streamed, np.memmap)
    assert not streamed.flags.writeable
    np.testing.assert_array_equal(streamed, expected)
    np.testing.assert_array_equal(predictions, expected_predictions)
    np.testing.assert_array_equal(np.load(path), expected)
    assert [p.name for p in tmp_path.iterdir()] == ["embeddings.npy"]


def test_extract_streams_float16(tmp_path):
    model, images = small_model_and_images()
    expected = extract_images(model, images, layer="penultimate")[0]
    streamed = extract_images(model, images, layer="penultimate", out=tmp_path / "e.npy",
                              out_dtype="float16")[0]
    assert streamed.dtype == np.float16
    np.testing.assert_allclose(streamed, expected, rtol=1e-3, atol=1e-4)


def test_extract_float16_overflow_warns(tmp_path):
    model, images = small_model_and_images(4)
    with pytest.warns(UserWarning, match="exceed the float16 range"):
        extract_images(model, images * 1e7, layer="features", out=tmp_path / "e.npy",
                       out_dtype="float16")


def test_extract_failure_leaves_no_file(tmp_path):
    model, images = small_model_and_images()

    def failing(batch):
        if failing.calls == 2:
            raise RuntimeError("transform failed")
        failing.calls += 1
        return batch

    failing.calls = 0
    with pytest.raises(RuntimeError, match="transform failed"):
        extract_images(model, images, layer="penultimate", batch_size=5, transform=failing,
                       out=tmp_path / "e.npy")
    assert list(tmp_path.iterdir()) == []


def test_extract_rejects_bad_out_dtype(tmp_path):
    model, images = small_model_and_images(2)
    with pytest.raises(ValueError, match="invalid out_dtype='int8'"):
        extract_images(model, images, layer="penultimate", out=tmp_path / "e.npy", out_dtype="int8")


def test_detector_reads_memory_map(tmp_path, blobs):
    embeddings, labels, predictions, planted = blobs
    path = tmp_path / "embeddings.npy"
    np.save(path, embeddings)
    mapped = AttractorDetector(random_state=0).fit(np.load(path, mmap_mode="r"), labels, predictions)

    result = scores.precision_recall_f1(flagged_mask(mapped, len(labels)), planted)
    assert result["precision"] >= 0.9
    assert result["recall"] >= 0.9
    # Below large_n_threshold every row goes through UMAP.
    assert "sample" not in mapped.settings_


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(n_processes: int, out_dir: Path) -> None:
    """Run the worker under ``accelerate launch`` with ``n_processes`` CPU processes (gloo)."""
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1",
               MASTER_ADDR="127.0.0.1", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1",
               "--num_processes", str(n_processes), "--mixed_precision", "no",
               "--dynamo_backend", "no", "--main_process_ip", "127.0.0.1",
               "--main_process_port", str(free_port())]
    # accelerate starts several CPU processes only through torchrun, which it
    # uses for --multi_gpu; ACCELERATE_USE_CPU then selects gloo on the CPU.
    command += ["--multi_gpu"] if n_processes > 1 else ["--cpu"]
    done = subprocess.run(command + [str(WORKER), str(out_dir)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_process_extraction_equals_one_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    launch(1, one)
    launch(2, two)

    reference = np.load(one / "rank0.npz")
    assert int(reference["num_processes"]) == 1
    for rank in (0, 1):
        result = np.load(two / f"rank{rank}.npz")
        assert int(result["num_processes"]) == 2
        np.testing.assert_array_equal(result["embeddings"], reference["embeddings"])
        np.testing.assert_array_equal(result["predictions"], reference["predictions"])
        np.testing.assert_array_equal(result["confidence"], reference["confidence"])
    np.testing.assert_array_equal(np.load(two / "streamed.npy"), reference["embeddings"])


def test_cli_logs_on_main_process_only(monkeypatch, tmp_path):
    import logging
    from argparse import Namespace

    from mitigate import cli

    args = Namespace(quiet=False, verbose=False)
    monkeypatch.setenv("RANK", "1")
    cli._configure_logging(args, tmp_path / "run.log")
    try:
        handlers = list(cli._ADDED_HANDLERS)
        assert len(handlers) == 1
        assert handlers[0].level == logging.WARNING
        assert not (tmp_path / "run.log").exists()
    finally:
        cli._remove_handlers()


def test_is_main_process_without_group():
    from mitigate.extract import is_main_process

    assert is_main_process()
