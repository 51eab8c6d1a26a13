"""One reduced run per mechanism recipe (collapse, starvation, artifact) on real Fashion-MNIST.

Each run uses a reduced training and audit split (about a minute of CPU time
each). Only the starvation run ends "mitigated" at that size, so each test
asserts what a reduced run was measured to do: the attractor found, the
cause named, the remedy chosen and the checks that passed.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from mitigate.cli import main
from mitigate.data import DEFAULT_FASHION_DIR, find_fashion_files
from mitigate.pipeline import load_audit_data
from mitigate.recipe import load_recipe
from mitigate.report import validate_report

ROOT = Path(__file__).resolve().parents[1]
REDUCED = ["--set", "data.train_limit=20000", "--set", "data.audit_limit=2000"]
# Collapse retrains a widened model, the slowest step, so it trains on fewer images.
REDUCED_COLLAPSE = ["--set", "data.train_limit=10000", "--set", "data.audit_limit=2000"]

needs_fashion = pytest.mark.skipif(
    find_fashion_files(DEFAULT_FASHION_DIR) is None,
    reason="needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)",
)


def _run_reduced(name: str, out: Path, settings=REDUCED) -> dict:
    args = ["run", str(ROOT / "recipes" / f"{name}.toml"), "--out", str(out), "--quiet", *settings]
    assert main(args) == 0
    audit = json.loads((out / "report.json").read_text())
    validate_report(audit)
    return audit


def _check(audit: dict, name: str) -> dict:
    return next(c for c in audit["verification"]["checks"] if c["name"] == name)


def _small_recipe(name: str, *, audit_limit: int = 100):
    """Load a recipe limited to 100 training images, for tests that stop at data loading."""
    recipe = load_recipe(ROOT / "recipes" / f"{name}.toml")
    recipe.settings["data"]["train_limit"] = 100
    recipe.settings["data"]["audit_limit"] = audit_limit
    return recipe


@pytest.mark.parametrize("name, kind", [
    ("collapse_bottleneck", "representational_collapse"),
    ("starvation_code", "gradient_starvation"),
    ("artifact_noise", "data_artifact"),
])
def test_mechanism_recipe_parses(name, kind):
    recipe = load_recipe(ROOT / "recipes" / f"{name}.toml")
    assert recipe["plant"]["kind"] == kind
    assert recipe.name == name


@needs_fashion
def test_plant_model_kwargs_conflict_rejected(tmp_path):
    recipe = _small_recipe("collapse_bottleneck")
    recipe.settings["model"]["kwargs"] = {"embedding_dim": 64}
    with pytest.raises(ValueError, match="embedding_dim = 64 conflicts with .* needs embedding_dim = 3"):
        load_audit_data(recipe, None)


@needs_fashion
def test_plant_options_need_planted_kind():
    recipe = _small_recipe("fashion_patch")
    recipe.settings["plant"]["options"] = {"stuck_class": 1}
    with pytest.raises(ValueError, match="kind = 'spurious_square' takes no options"):
        load_audit_data(recipe, None)


@needs_fashion
def test_unknown_plant_option_named():
    recipe = _small_recipe("starvation_code")
    recipe.settings["plant"]["options"] = {"stuck_clas": 1}
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['stuck_clas'\]"):
        load_audit_data(recipe, None)


@needs_fashion
def test_collapse_truth_waits_for_embeddings():
    recipe = _small_recipe("collapse_bottleneck", audit_limit=50)
    data = load_audit_data(recipe, None)
    assert data.planted_audit is None
    assert data.model_kwargs == {"embedding_dim": 3}

    embeddings = np.ones((50, 3), dtype=np.float32)
    embeddings[:7] = 0.0
    data.resolve_truth(embeddings)
    assert data.planted_audit.sum() == 7
    assert data.planted_audit[:7].all()


@needs_fashion
def test_collapse_recipe_reduced(tmp_path):
    audit = _run_reduced("collapse_bottleneck", tmp_path / "run", REDUCED_COLLAPSE)
    primary = audit["attractors"][0]
    assert primary["cause"] == "representational_collapse"
    assert primary["remedy"] == "wider_bottleneck"
    # The planted member set (rows embedded at zero) was resolved after training and found.
    assert audit["evaluation"]["core"]["recall"] >= 0.9
    assert primary["acs_after"] < primary["acs_before"]
    assert _check(audit, "overall accuracy kept")["passed"]


@needs_fashion
def test_starvation_recipe_reduced(tmp_path):
    audit = _run_reduced("starvation_code", tmp_path / "run")
    primary = audit["attractors"][0]
    # The attractor is the stuck code's: members of the stuck classes and the
    # code's class, predicted as the code's class, located at the code.
    assert set(primary["classes"]) <= {"T-shirt/top", "Pullover", "Dress", "Coat", "Shirt"}
    assert primary["top_prediction"] == "T-shirt/top"
    assert primary["probe"]["box"] == [1, 1, 6, 6]
    # Filling the code box moved about 20% of members out; swapping in the box of
    # non-members that carry another code moved 96% out.
    assert primary["probe"]["swap_exit_rate"] >= 0.5
    assert primary["cause"] == "gradient_starvation"
    assert primary["remedy"] == "counterfactual_augmentation"
    assert _check(audit, "attractor 0: member-set ACS below threshold")["passed"]
    assert _check(audit, "worst-group accuracy rose")["passed"]


@needs_fashion
def test_artifact_recipe_reduced(tmp_path):
    audit = _run_reduced("artifact_noise", tmp_path / "run")
    primary = audit["attractors"][0]
    assert primary["cause"] == "data_artifact"
    assert primary["remedy"] == "artifact_stripping"
    assert audit["evaluation"]["core"]["f1"] >= 0.9
    assert (tmp_path / "run" / "retrained" / "artifact_stripper.json").is_file()
