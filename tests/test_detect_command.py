"""``mitigate detect`` on precomputed embeddings: formats, report contents and exit codes."""

import json
import logging
import socket

import numpy as np
import pytest

from mitigate.cli import main
from mitigate.report import validate_report

from conftest import copied_groups, planted_blobs

N_PER_CLASS = 60
CLASS_NAMES = np.array(["cat", "dog", "emu", "fox"])


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Fail any test that opens a network connection."""
    def refuse(*args, **kwargs):
        raise AssertionError("mitigate detect tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module")
def planted():
    return planted_blobs(seed=1, n_per_class=N_PER_CLASS)


@pytest.fixture(scope="module")
def npy_files(tmp_path_factory, planted):
    embeddings, labels, predictions, _ = planted
    folder = tmp_path_factory.mktemp("npy")
    np.save(folder / "embeddings.npy", embeddings)
    np.save(folder / "labels.npy", labels)
    np.save(folder / "predictions.npy", predictions)
    np.save(folder / "names.npy", CLASS_NAMES[labels])
    return folder


def _table(planted):
    import pyarrow as pa

    embeddings, labels, predictions, _ = planted
    return pa.table({
        "embedding": list(embeddings),
        "label": CLASS_NAMES[labels],
        "prediction": CLASS_NAMES[predictions],
        "uid": [f"row-{i}" for i in range(labels.size)],
    })


@pytest.fixture(scope="module")
def parquet_file(tmp_path_factory, planted):
    import pyarrow.parquet as pq

    path = tmp_path_factory.mktemp("parquet") / "embeddings.parquet"
    pq.write_table(_table(planted), path)
    return path


def _detect(*args):
    return main(["detect", *map(str, args), "--quiet"])


def _report(out):
    audit = json.loads((out / "report.json").read_text())
    validate_report(audit)
    return audit


def _flagged_rows(audit):
    return {member for attractor in audit["attractors"] for member in attractor["member_ids"]}


def test_npy_inputs_find_planted_members(npy_files, planted, tmp_path):
    out = tmp_path / "out"
    code = _detect(npy_files / "embeddings.npy", "--out", out, "--labels", npy_files / "labels.npy",
                   "--predictions", npy_files / "predictions.npy")
    audit = _report(out)
    planted_rows = set(np.flatnonzero(planted[3]).tolist())
    found = _flagged_rows(audit)

    assert code == 0
    assert audit["kind"] == "detect"
    assert audit["verdict"] == "attractors found"
    assert len(found & planted_rows) >= 0.9 * len(found)
    assert len(found & planted_rows) >= 0.9 * len(planted_rows)
    for name in ("report.html", "report.md", "detect.log"):
        assert (out / name).stat().st_size > 0, name
    assert not list(out.glob("*.tmp"))


def test_report_records_environment_and_settings(npy_files, tmp_path):
    out = tmp_path / "out"
    _detect(npy_files / "embeddings.npy", "--out", out, "--labels", npy_files / "labels.npy",
            "--seed", "3")
    audit = _report(out)

    assert audit["environment"]["threads"] >= 1
    for library in ("numpy", "umap-learn", "hdbscan", "scikit-learn"):
        assert library in audit["environment"]["libraries"], library
    assert audit["detection_settings"]["random_state"] == 3
    assert audit["detection_settings"]["acs_reference"] == "class-matched"


def test_parquet_string_labels_and_id_column(parquet_file, planted, tmp_path):
    out = tmp_path / "out"
    code = _detect(parquet_file, "--out", out, "--labels", "label", "--predictions", "prediction",
                   "--ids", "uid")
    audit = _report(out)
    attractor = audit["attractors"][0]
    planted_ids = {f"row-{i}" for i in np.flatnonzero(planted[3])}

    assert code == 0
    assert len(audit["attractors"]) == 1
    assert len(set(attractor["member_ids"]) & planted_ids) >= 0.9 * attractor["member_count"]
    assert set(attractor["classes"]) == set(CLASS_NAMES)
    assert attractor["top_prediction"] == "cat"
    assert audit["data"]["class_names"] == list(CLASS_NAMES)


def test_string_labels_from_npy_file(npy_files, tmp_path):
    out = tmp_path / "out"
    code = _detect(npy_files / "embeddings.npy", "--out", out, "--labels", npy_files / "names.npy")
    audit = _report(out)
    assert code == 0
    assert audit["data"]["class_names"] == list(CLASS_NAMES)
    for cluster in audit["before"]["clusters"]:
        assert cluster["top_label"] in CLASS_NAMES


def test_datasets_folder_keeps_selected_order(planted, tmp_path):
    import datasets

    embeddings, labels, _, _ = planted
    order = np.random.default_rng(0).permutation(labels.size)
    dataset = datasets.Dataset.from_dict({
        "embedding": embeddings.tolist(), "label": labels.tolist(), "row": list(range(labels.size)),
    }).select(order)
    dataset.save_to_disk(str(tmp_path / "saved"))

    out = tmp_path / "out"
    code = _detect(tmp_path / "saved", "--out", out, "--labels", "label", "--ids", "row")
    audit = _report(out)

    assert code == 0
    assert audit["data"]["n_audit"] == labels.size
    # The ids are the original row numbers, so the members must still be the planted rows.
    found = _flagged_rows(audit)
    planted_rows = set(np.flatnonzero(planted[3]).tolist())
    assert found
    assert len(found & planted_rows) >= 0.9 * len(found)


def test_dataset_dict_folder_asks_for_split(planted, tmp_path, caplog):
    import datasets

    embeddings = planted[0][:10]
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"embedding": embeddings.tolist()})}) \
        .save_to_disk(str(tmp_path / "saved"))
    code = _detect(tmp_path / "saved", "--out", tmp_path / "out")
    assert code == 2
    assert "DatasetDict with splits ['train']; pass one split folder" in caplog.text


def test_ragged_parquet_row_exit_2_with_row(tmp_path, caplog):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [[0.0, 1.0, 2.0]] * 5
    rows[3] = [0.0, 1.0]
    pq.write_table(pa.table({"embedding": rows}), tmp_path / "ragged.parquet")
    code = _detect(tmp_path / "ragged.parquet", "--out", tmp_path / "out")
    assert code == 2
    assert "most rows have 3 values, but row 3 has 2" in caplog.text
    assert not (tmp_path / "out").exists()


def test_hub_id_exit_2_asks_for_local_path(tmp_path, caplog):
    code = _detect("someone/some-embeddings", "--out", tmp_path / "out")
    assert code == 2
    assert "not a local file or folder" in caplog.text
    assert "pass that local FOLDER" in caplog.text


def test_missing_label_column_lists_columns(parquet_file, tmp_path, caplog):
    code = _detect(parquet_file, "--out", tmp_path / "out", "--labels", "class")
    assert code == 2
    assert "'class' is neither a file nor a column" in caplog.text
    assert "columns: embedding, label, prediction, uid" in caplog.text


def test_label_count_mismatch_exit_2(npy_files, tmp_path, caplog):
    np.save(tmp_path / "short.npy", np.zeros(5, dtype=int))
    code = _detect(npy_files / "embeddings.npy", "--out", tmp_path / "out", "--labels",
                   tmp_path / "short.npy")
    assert code == 2
    assert "labels has 5 entries but the embeddings have 240 rows" in caplog.text


def test_object_npy_rejected_without_unpickling(tmp_path, caplog):
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = [1.0, 2.0], [1.0]
    np.save(tmp_path / "ragged.npy", ragged, allow_pickle=True)
    code = _detect(tmp_path / "ragged.npy", "--out", tmp_path / "out")
    assert code == 2
    assert "contains Python objects" in caplog.text


def test_nonfinite_row_rejected_then_dropped(npy_files, planted, tmp_path, caplog):
    embeddings = planted[0].copy()
    embeddings[7, 2] = np.nan
    np.save(tmp_path / "nan.npy", embeddings)

    assert _detect(tmp_path / "nan.npy", "--out", tmp_path / "raise") == 2
    assert "NaN or infinite values in 1 row(s): 7" in caplog.text

    with caplog.at_level(logging.WARNING):
        code = _detect(tmp_path / "nan.npy", "--out", tmp_path / "drop", "--drop-nonfinite",
                       "--labels", npy_files / "labels.npy", "--predictions", npy_files / "predictions.npy")
    audit = _report(tmp_path / "drop")
    assert code == 0
    assert "dropped 1 row(s) of embeddings with NaN or infinite values: 7" in caplog.text
    assert audit["detection_settings"]["n_nonfinite_rows_dropped"] == 1
    assert 7 not in _flagged_rows(audit)


def test_without_labels_flags_planted_and_names_missing_scores(npy_files, planted, tmp_path):
    out = tmp_path / "out"
    code = _detect(npy_files / "embeddings.npy", "--out", out, "--fail-on-attractor")
    audit = _report(out)
    found = _flagged_rows(audit)
    planted_rows = set(np.flatnonzero(planted[3]).tolist())

    assert code == 1
    assert len(found & planted_rows) >= 0.9 * len(planted_rows)
    assert len(found & planted_rows) >= 0.9 * len(found)
    unavailable = audit["before"]["unavailable_scores"]
    for score in ("label_entropy", "prediction_concentration", "accuracy", "class-matched ACS"):
        assert score in unavailable, score
    assert any("label entropy not computed: no labels given" in r for r in audit["verdict_reasons"])
    assert audit["attractors"][0]["classes"] == {}


@pytest.mark.parametrize("with_labels", [True, False])
def test_gate_planted_exit_1_clean_exit_0(tmp_path, with_labels):
    codes = {}
    for name, attractor in (("planted", True), ("clean", False)):
        embeddings, labels, predictions, _ = planted_blobs(seed=2, n_per_class=N_PER_CLASS,
                                                           attractor=attractor)
        np.save(tmp_path / f"{name}.npy", embeddings)
        np.save(tmp_path / f"{name}_labels.npy", labels)
        np.save(tmp_path / f"{name}_predictions.npy", predictions)
        targets = []
        if with_labels:
            targets = ["--labels", tmp_path / f"{name}_labels.npy",
                       "--predictions", tmp_path / f"{name}_predictions.npy"]
        codes[name] = _detect(tmp_path / f"{name}.npy", "--out", tmp_path / name, *targets,
                              "--fail-on-attractor")
    assert codes == {"planted": 1, "clean": 0}
    assert _report(tmp_path / "clean")["verdict"] == "no attractor found"


def test_without_gate_planted_exits_0(npy_files, tmp_path):
    assert _detect(npy_files / "embeddings.npy", "--out", tmp_path / "out") == 0


def test_high_acs_threshold_clears_gate(npy_files, tmp_path):
    code = _detect(npy_files / "embeddings.npy", "--out", tmp_path / "out", "--labels",
                   npy_files / "labels.npy", "--acs-threshold", "1e7", "--fail-on-attractor")
    assert code == 0


@pytest.mark.parametrize("argv", [
    ["--metric", "manhattan"],
    ["--min-cluster-size", "many"],
    [],
])
def test_invalid_option_exit_2(npy_files, tmp_path, argv):
    out_args = ["--out", str(tmp_path / "out")] if argv else []
    with pytest.raises(SystemExit) as info:
        main(["detect", str(npy_files / "embeddings.npy"), *out_args, *argv])
    assert info.value.code == 2


def test_invalid_detector_value_exit_2(npy_files, tmp_path, caplog):
    code = _detect(npy_files / "embeddings.npy", "--out", tmp_path / "out", "--min-cluster-size", "1")
    assert code == 2
    assert "min_cluster_size must be at least 2" in caplog.text
    assert not (tmp_path / "out").exists()


def test_run_writes_per_model_detect_report(planted, tmp_path):
    from pathlib import Path
    from types import SimpleNamespace

    from mitigate.detect import AttractorDetector
    from mitigate.recipe import load_recipe
    from mitigate.run import _write_model_report

    embeddings, labels, predictions, _ = planted
    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "fashion_patch.toml")
    data = SimpleNamespace(splits=SimpleNamespace(audit_labels=labels, class_names=list(CLASS_NAMES),
                                                  source="planted blobs"))
    state = {"detector": AttractorDetector().fit(embeddings, labels, predictions),
             "predictions": predictions}
    _write_model_report(tmp_path / "baseline", state, recipe, data, which="baseline")
    audit = _report(tmp_path / "baseline")

    assert audit["kind"] == "detect"
    assert audit["recipe"]["name"] == recipe.name
    assert audit["attractors"][0]["top_prediction"] == "cat"
    assert set(audit["attractors"][0]["classes"]) == set(CLASS_NAMES)
    assert "baseline model" in audit["data"]["source"]
    assert (tmp_path / "baseline" / "report.html").is_file()


def test_without_labels_flags_translated_copies(tmp_path):
    embeddings, ids = copied_groups(3)
    np.save(tmp_path / "copies.npy", embeddings)
    code = _detect(tmp_path / "copies.npy", "--out", tmp_path / "out", "--fail-on-attractor")
    audit = _report(tmp_path / "out")
    assert code == 1
    copies = set(np.flatnonzero(ids >= 3).tolist())
    found = _flagged_rows(audit)
    assert len(found & copies) >= 0.95 * len(copies)
    assert len(found & copies) >= 0.95 * len(found)
    assert "translated copies of clusters" in audit["attractors"][0]["summary"]
    assert audit["detection_settings"]["copy_fit_threshold"] == 2.0

    code = _detect(tmp_path / "copies.npy", "--out", tmp_path / "off", "--no-translated-copies")
    assert code == 0
    assert _report(tmp_path / "off")["attractors"] == []


def test_copy_fit_threshold_option(tmp_path):
    embeddings, _ = copied_groups(3)
    np.save(tmp_path / "copies.npy", embeddings)
    code = _detect(tmp_path / "copies.npy", "--out", tmp_path / "out", "--copy-fit-threshold", "1.5")
    assert code == 0
    assert _report(tmp_path / "out")["detection_settings"]["copy_fit_threshold"] == 1.5

    code = _detect(tmp_path / "copies.npy", "--out", tmp_path / "bad", "--copy-fit-threshold", "-1")
    assert code == 2
    assert not (tmp_path / "bad" / "report.json").exists()
