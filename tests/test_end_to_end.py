"""The full loop on real Fashion-MNIST, with a reduced audit split (about a minute)."""

import json
from pathlib import Path

import pytest

from mitigate.cli import main
from mitigate.data import DEFAULT_FASHION_DIR, find_fashion_files
from mitigate.report import validate_report

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    find_fashion_files(DEFAULT_FASHION_DIR) is None,
    reason="needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)",
)


def test_reduced_recipe_mitigates_planted_attractor(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", str(ROOT / "recipes/fashion_patch.toml"), "--out", str(out), "--quiet",
            "--set", "data.audit_limit=2000"]
    assert main(args) == 0

    audit = json.loads((out / "report.json").read_text())
    validate_report(audit)
    assert audit["verdict"] == "mitigated"
    attractor = audit["attractors"][0]
    assert attractor["cause"] == "spurious_correlation"
    assert attractor["remedy"] == "counterfactual_augmentation"
    assert attractor["acs_after"] < attractor["acs_before"]
    extended = audit["evaluation"]["extended"]
    assert extended["precision"] >= 0.8
    assert extended["recall"] >= 0.8
    # The reach in the record is the set that the "extended" evaluation scored:
    # the members plus the clusters the probe tied to the same feature.
    members, reach = set(attractor["member_ids"]), set(attractor["reach_member_ids"])
    assert members < reach
    assert attractor["reach_member_count"] == len(reach)
    assert attractor["probe"]["extended_member_count"] == len(reach)

    assert (out / "report.html").stat().st_size > 10_000
    assert (out / "report.md").is_file()
    assert (out / "baseline" / "model.safetensors").is_file()
    assert (out / "retrained" / "model.safetensors").is_file()
    assert not list(out.rglob("*.tmp"))


def test_rerun_same_out_reuses_models(tmp_path):
    out = tmp_path / "run"
    args = ["run", str(ROOT / "recipes/fashion_patch.toml"), "--out", str(out), "--quiet",
            "--set", "data.dataset='digits'", "--set", "train.epochs=1"]
    assert main(args) == 0
    baseline = out / "baseline" / "model.safetensors"
    first_mtime = baseline.stat().st_mtime_ns
    assert main(args) == 0
    assert baseline.stat().st_mtime_ns == first_mtime
    assert "reusing trained weights" in (out / "run.log").read_text()
