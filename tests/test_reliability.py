"""Degenerate embeddings, bad files and interrupted writes: a correct result or a clear error.

Each test builds one small input of the kind that representational collapse
produces, or that real files contain, and checks the right value. Mixed
precision, exact resume and recipe or checkpoint loading are tested in
tests/test_train.py and tests/test_recipe.py; the loss modules on degenerate
batches in tests/losses/test_losses_degenerate.py.
"""

import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest

from mitigate import scores
from mitigate.constants import ACS_FLOOR, NOISE_LABEL
from mitigate.detect import AttractorDetector
from mitigate.detect_command import detect_report
from mitigate.report import validate_report

# Most inputs here have no labels; the detector's warning about that is expected.
pytestmark = pytest.mark.filterwarnings("ignore:no labels given:UserWarning")


def _score_values(detector):
    """Yield every numeric score of every cluster and attractor."""
    for cluster in [*detector.clusters_, *detector.attractors_]:
        for name in ("acs", "relative_acs", "label_entropy", "top_label_share",
                     "prediction_concentration", "accuracy"):
            yield name, getattr(cluster, name)


def _assert_scores_finite(detector):
    for name, value in _score_values(detector):
        assert value is None or math.isfinite(value), (name, value)


def _fit_quietly(detector, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return detector.fit(*args)


# -- identical and near-identical rows ---------------------------------------

def test_identical_points_share_one_cluster():
    rng = np.random.default_rng(0)
    copies = np.tile([[1.0, 2.0]], (500, 1))
    embeddings = np.vstack([copies, rng.normal(scale=5.0, size=(40, 2))])
    labels = np.arange(540) % 3
    predictions = np.zeros(540, dtype=int)

    detector = AttractorDetector().fit(embeddings, labels, predictions)
    copy_clusters = np.unique(detector.labels_[:500])
    audit = detect_report(detector, labels=labels, predictions=predictions, source="test")

    assert copy_clusters.size == 1
    assert copy_clusters[0] != NOISE_LABEL
    _assert_scores_finite(detector)
    copy_cluster = next(c for c in detector.clusters_ if c.cluster_id == copy_clusters[0])
    assert copy_cluster.acs == pytest.approx(1 / ACS_FLOOR)
    validate_report(audit)


def test_near_identical_points_form_one_cluster():
    rng = np.random.default_rng(0)
    near = np.ones((8, 4)) + rng.normal(scale=1e-4, size=(8, 4))
    embeddings = np.vstack([near, [[100.0, 100.0, 100.0, 100.0]]])

    detector = AttractorDetector().fit(embeddings)
    ids = detector.labels_

    assert np.unique(ids[:8]).size == 1
    assert ids[0] != NOISE_LABEL
    assert ids[8] == NOISE_LABEL
    assert len(detector.clusters_) == 1
    assert detector.clusters_[0].acs > 1e3


# -- cluster sizes and neighbourhoods larger than the data --------------------

def test_min_cluster_size_above_rows_is_clamped():
    embeddings = np.random.default_rng(1).normal(size=(10, 3))
    with pytest.warns(UserWarning, match=r"min_cluster_size=15 is larger than half of the 10 rows; "
                                         r"using min_cluster_size=5"):
        detector = AttractorDetector(min_cluster_size=15).fit(embeddings)
    assert detector.settings_["min_cluster_size"] == 5


def test_min_cluster_size_40_of_100_rows():
    embeddings = np.random.default_rng(2).normal(size=(100, 128))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        detector = AttractorDetector(min_cluster_size=40).fit(embeddings, np.arange(100) % 2)
    assert detector.settings_["min_cluster_size"] == 40
    assert detector.labels_.shape == (100,)
    for cluster in detector.clusters_:
        assert cluster.size >= 40


def test_min_samples_above_rows_is_clamped():
    embeddings = np.random.default_rng(3).normal(size=(20, 3))
    with pytest.warns(UserWarning, match=r"min_samples=500 is not below the 20 rows; using min_samples=19"):
        AttractorDetector(min_samples=500).fit(embeddings)


def test_four_samples_use_small_sample_path():
    embeddings = np.random.default_rng(4).normal(size=(4, 3))
    detector = AttractorDetector().fit(embeddings)
    assert detector.settings_["reducer"].startswith("pca (small-sample path")
    assert np.isfinite(detector.coords_).all()


def test_nine_components_for_ten_samples_rejected():
    embeddings = np.random.default_rng(5).normal(size=(10, 12))
    with pytest.raises(ValueError, match=r"n_components=9 needs more than 10 samples, got 10; "
                                         r"lower n_components"):
        AttractorDetector(n_components=9).fit(embeddings)


# -- dtypes and magnitudes ------------------------------------------------------

def _integer_blobs():
    rng = np.random.default_rng(6)
    centres = np.array([[0, 0, 0], [40, 0, 0], [0, 40, 0]])
    return np.repeat(centres, 20, axis=0) + rng.integers(-3, 4, size=(60, 3))


@pytest.mark.parametrize("dtype", [np.float16, np.float64, np.int64, np.int8, np.uint8])
def test_dtype_converted_once_same_clusters(dtype):
    values = _integer_blobs() + 64  # non-negative, so uint8 keeps the same values
    reference = AttractorDetector().fit(values.astype(np.float32))
    detector = AttractorDetector().fit(values.astype(dtype))
    assert detector.embeddings_.dtype == np.float32
    np.testing.assert_array_equal(detector.labels_, reference.labels_)
    assert len(reference.clusters_) == 3


def test_bool_embeddings_accepted():
    values = np.random.default_rng(7).random((30, 6)) > 0.5
    detector = _fit_quietly(AttractorDetector(), values)
    assert detector.embeddings_.dtype == np.float32


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_extreme_magnitudes_same_clusters(scale):
    values = _integer_blobs().astype(np.float64)
    reference = AttractorDetector().fit(values)
    detector = AttractorDetector().fit(values * scale)
    np.testing.assert_array_equal(detector.labels_, reference.labels_)
    _assert_scores_finite(detector)
    assert np.isfinite(detector.coords_).all()


def test_float64_beyond_float32_range_rejected():
    values = np.ones((10, 2))
    values[4, 1] = 1e300
    with pytest.raises(ValueError, match=r"beyond the float32 range .* in 1 row\(s\): 4; divide"):
        AttractorDetector().fit(values)


# -- zero rows under the cosine metric ------------------------------------------

def test_zero_row_cosine_left_out_and_finite():
    rng = np.random.default_rng(8)
    embeddings = np.vstack([rng.normal(size=(50, 16)), np.zeros((1, 16))])
    with pytest.warns(UserWarning, match=r"1 all-zero row\(s\) have no direction .* \(rows \[50\]\)"):
        detector = AttractorDetector(metric="cosine").fit(embeddings)
    np.testing.assert_array_equal(detector.zero_rows_, [50])
    assert detector.labels_[50] == NOISE_LABEL
    assert np.isfinite(detector.coords_).all()
    _assert_scores_finite(detector)


def test_tiny_rows_are_not_zero_under_cosine():
    embeddings = _integer_blobs().astype(np.float32) + 1.0
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*all-zero row", category=UserWarning)
        detector = AttractorDetector(metric="cosine").fit(embeddings * 1e-30)
    assert detector.zero_rows_.size == 0
    assert np.isfinite(detector.coords_).all()


# -- reproducibility and the recorded environment -------------------------------

def test_same_seed_same_clusters_and_coords(blobs):
    embeddings, labels, predictions, _ = blobs
    first = AttractorDetector(random_state=5).fit(embeddings, labels, predictions)
    second = AttractorDetector(random_state=5).fit(embeddings, labels, predictions)
    assert first.settings_["reducer"] == "umap"
    np.testing.assert_array_equal(first.labels_, second.labels_)
    np.testing.assert_array_equal(first.coords_, second.coords_)


def test_environment_records_versions_threads_without_torch():
    code = ("import json, sys\nfrom mitigate.audit import environment_info\n"
            "info = environment_info()\nprint(json.dumps([info, 'torch' in sys.modules]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    info, torch_loaded = json.loads(result.stdout)
    assert not torch_loaded
    assert info["threads"] >= 1
    for library in ("numpy", "scikit-learn", "hdbscan", "umap-learn", "numba"):
        assert library in info["libraries"], library


# -- the command line stays light ------------------------------------------------

def test_detect_help_loads_no_heavy_library():
    code = ("import sys\nfrom mitigate.cli import main\n"
            "try:\n    main(['detect', '--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'umap', 'hdbscan', 'sklearn', 'datasets', 'pyarrow') "
            "if m in sys.modules]\nprint(heavy, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stderr.strip().splitlines()[-1] == "[]"
    assert "--fail-on-attractor" in result.stdout


# -- non-finite rows ---------------------------------------------------------------

def _with_bad_rows():
    embeddings = _integer_blobs().astype(np.float32)
    embeddings[7, 2] = np.nan
    embeddings[9, 0] = np.inf
    return embeddings


def test_nonfinite_rows_rejected_with_indices():
    with pytest.raises(ValueError, match=r"NaN or infinite values in 2 row\(s\): 7, 9\. .*--drop-nonfinite"):
        AttractorDetector().fit(_with_bad_rows())


def test_nonfinite_rows_dropped_with_count():
    labels = np.repeat([0, 1, 2], 20)
    with pytest.warns(UserWarning, match=r"dropped 2 row\(s\) of embeddings with NaN or infinite values: 7, 9"):
        detector = AttractorDetector(nonfinite="drop").fit(_with_bad_rows(), labels)
    audit = detect_report(detector, labels=labels, source="test")

    assert detector.labels_[[7, 9]].tolist() == [NOISE_LABEL, NOISE_LABEL]
    assert detector.kept_rows_.sum() == 58
    assert detector.settings_["n_nonfinite_rows_dropped"] == 2
    validate_report(audit)


def test_dropping_rows_keeps_other_clusters():
    clean = AttractorDetector().fit(np.delete(_with_bad_rows(), [7, 9], axis=0))
    dropped = _fit_quietly(AttractorDetector(nonfinite="drop"), _with_bad_rows())
    np.testing.assert_array_equal(dropped.labels_[dropped.kept_rows_], clean.labels_)


# -- scores that are not defined ------------------------------------------------------

def test_single_label_entropy_not_defined():
    embeddings = np.random.default_rng(9).normal(size=(10, 5))
    labels = np.zeros(10, dtype=int)
    detector = AttractorDetector().fit(embeddings, labels, labels)
    audit = detect_report(detector, labels=labels, predictions=labels, source="test")

    assert detector.clusters_
    for cluster in detector.clusters_:
        assert cluster.label_entropy is None
        assert "needs at least 2 classes" in cluster.label_entropy_reason
    validate_report(audit)


def test_relative_acs_not_defined_with_few_clusters():
    value, reason = scores.relative_acs_or_reason(5.0, [2.0])
    assert value is None
    assert reason == "relative ACS needs at least 2 other clusters to compare with, got 1"
    assert scores.relative_acs(6.0, [1.0, 3.0, 2.0]) == pytest.approx(3.0)


def test_one_cluster_without_labels_flags_nothing():
    rng = np.random.default_rng(10)
    tight = rng.normal(scale=0.01, size=(30, 4))
    embeddings = np.vstack([tight, rng.normal(scale=50.0, size=(5, 4))])
    detector = _fit_quietly(AttractorDetector(), embeddings)

    assert len(detector.clusters_) == 1
    cluster = detector.clusters_[0]
    assert cluster.relative_acs is None
    assert not cluster.flagged
    assert any(reason.startswith("stands out: no (relative ACS not defined")
               for reason in cluster.flag_reasons)


def test_noise_rows_never_form_a_cluster():
    rng = np.random.default_rng(11)
    blobs = np.repeat([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], 15, axis=0) + rng.normal(size=(45, 2))
    far = np.array([[100.0, 100.0], [-100.0, 80.0], [90.0, -120.0], [-150.0, -90.0]])
    embeddings = np.vstack([blobs, far])
    labels = np.concatenate([np.repeat([0, 1, 2], 15), [0, 1, 2, 0]])
    detector = AttractorDetector().fit(embeddings, labels, labels)
    noise = detector.labels_ == NOISE_LABEL

    assert noise[45:].all()
    assert all(c.cluster_id != NOISE_LABEL for c in detector.clusters_)
    assert sum(c.size for c in detector.clusters_) + noise.sum() == detector.labels_.size
    for attractor in detector.attractors_:
        assert not noise[attractor.members].any()


# -- hooks on Hugging Face transformer layers ---------------------------------------

@pytest.fixture(scope="module")
def tiny_bert():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=37,
                                     max_position_embeddings=16)
    torch.manual_seed(0)
    return transformers.BertModel(config).eval()


def _bert_inputs():
    import torch

    generator = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(0, 50, (3, 7), generator=generator),
            "attention_mask": torch.ones(3, 7, dtype=torch.long)}


@pytest.mark.parametrize("layer", ["encoder", "encoder.layer.1.attention", "encoder.layer.1"])
def test_hook_takes_hidden_state_of_bert_layer(tiny_bert, layer):
    import torch

    from mitigate.extract import LayerCapture

    with torch.no_grad(), LayerCapture(tiny_bert, layer, pooling="mean") as capture:
        output = tiny_bert(**_bert_inputs())
        pooled = capture.pop()

    assert pooled.shape == (3, 32)
    assert not pooled.requires_grad
    assert pooled.device.type == "cpu"
    if layer != "encoder.layer.1.attention":
        expected = output.last_hidden_state.mean(dim=1)
        torch.testing.assert_close(pooled, expected)
    for module in tiny_bert.modules():
        assert not module._forward_hooks


def test_hook_output_without_tensor_lists_types():
    import torch
    from transformers.modeling_outputs import BaseModelOutput

    from mitigate.extract import hidden_state

    output = BaseModelOutput(hidden_states=(torch.zeros(1, 2),))
    with pytest.raises(TypeError, match=r"BaseModelOutput has no tensor to use; found \{'hidden_states': 'tuple'\}"):
        hidden_state(output)


def test_hook_removed_when_bert_forward_raises(tiny_bert):
    import torch

    from mitigate.extract import LayerCapture

    too_long = torch.full((2, 30), 3)  # more tokens than the 16 position embeddings
    with pytest.raises(RuntimeError, match="must match the existing size"):
        with LayerCapture(tiny_bert, "encoder.layer.0"):
            tiny_bert(input_ids=too_long)
    for module in tiny_bert.modules():
        assert not module._forward_hooks


# -- bad files: ragged rows and hub ids -------------------------------------------------

def test_ragged_datasets_row_named(tmp_path):
    import datasets

    from mitigate.inputs import InputError, load_embeddings

    rows = [[0.0, 1.0, 2.0, 3.0]] * 6
    rows[4] = [0.0, 1.0, 2.0]
    datasets.Dataset.from_dict({"embedding": rows, "label": list(range(6))}).save_to_disk(
        str(tmp_path / "saved"))
    with pytest.raises(InputError, match=r"most rows have 4 values, but row 4 has 3"):
        load_embeddings(tmp_path / "saved")


def test_ragged_parquet_row_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mitigate.inputs import InputError, load_embeddings

    rows = [[1.0, 2.0]] * 30
    rows[17] = [1.0, 2.0, 3.0]
    pq.write_table(pa.table({"vectors": rows}), tmp_path / "ragged.parquet")
    with pytest.raises(InputError, match=r"column 'vectors' .* row 17 has 3"):
        load_embeddings(tmp_path / "ragged.parquet")


def test_parquet_missing_row_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mitigate.inputs import InputError, load_embeddings

    rows = [[1.0, 2.0], None, [1.0, 2.0]]
    pq.write_table(pa.table({"embedding": rows}), tmp_path / "gap.parquet")
    with pytest.raises(InputError, match=r"has missing rows: 1$"):
        load_embeddings(tmp_path / "gap.parquet")


def test_hub_id_offline_asks_for_local_path(monkeypatch):
    import socket

    from mitigate.inputs import InputError, load_embeddings

    def refuse(*args, **kwargs):
        raise AssertionError("the loader tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    with pytest.raises(InputError, match=r"'sentence-transformers/some-embeddings' is not a local file "
                                         r"or folder\. .*pass that local FOLDER"):
        load_embeddings("sentence-transformers/some-embeddings")


# -- losses on degenerate batches ----------------------------------------------------------

def _loss_inputs(kind, dtype):
    import torch

    if kind == "identical":
        embeddings = torch.full((8, 6), 0.7)
    else:
        embeddings = torch.randn(8, 6, generator=torch.Generator().manual_seed(0))
        embeddings = embeddings / embeddings.norm(dim=1, keepdim=True) * 100.0
    return embeddings.to(dtype).requires_grad_(True)


@pytest.mark.parametrize("kind", ["identical", "norm_100"])
@pytest.mark.parametrize("dtype_name", ["float32", "float16"])
@pytest.mark.parametrize("loss_name", ["uniformity", "supcon_t0.01", "supcon_t0.1"])
def test_losses_finite_on_degenerate_batches(loss_name, dtype_name, kind):
    import torch

    from losses import SupConLoss, UniformityLoss

    dtype = getattr(torch, dtype_name)
    embeddings = _loss_inputs(kind, dtype)
    labels = torch.arange(8) // 2
    if loss_name == "uniformity":
        loss = UniformityLoss()(embeddings)
    else:
        loss = SupConLoss(temperature=float(loss_name.split("_t")[1]))(embeddings, labels)
    loss.backward()

    assert torch.isfinite(loss)
    assert torch.isfinite(embeddings.grad).all()


# -- interrupted writes -------------------------------------------------------------------------

@pytest.mark.invalid_report
def test_atomic_write_keeps_previous_file(tmp_path):
    from mitigate.files import atomic_path, write_json

    target = tmp_path / "report.json"
    write_json(target, {"verdict": "mitigated"})
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text('{"verdict": "half')
            raise KeyboardInterrupt
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        write_json(target, {"acs": float("nan")})

    assert json.loads(target.read_text()) == {"verdict": "mitigated"}
    assert [path.name for path in tmp_path.iterdir()] == ["report.json"]


def test_restart_clears_previous_run(tmp_path):
    from mitigate.pipeline import prepare_output
    from mitigate.recipe import load_recipe
    from pathlib import Path

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "fashion_patch.toml")
    out = tmp_path / "run"
    prepare_output(out, recipe, restart=False)
    (out / "baseline").mkdir()
    (out / "baseline" / "model.safetensors").write_bytes(b"old")

    prepare_output(out, recipe, restart=False)
    assert (out / "baseline" / "model.safetensors").is_file()
    prepare_output(out, recipe, restart=True)
    assert not (out / "baseline").exists()
    assert (out / "work" / "state.json").is_file()
