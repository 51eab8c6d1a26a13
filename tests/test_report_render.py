"""The HTML page, the markdown summary and the report schema, on a planted attractor."""

import copy
import re
import subprocess
import sys

import numpy as np
import pytest

from mitigate.report import SCHEMA_PATH, render_html, render_markdown, validate_report
from mitigate.report.plots import subsample_by_cluster

HOSTILE_CLASS = "<script>alert(1)</script>"
CLASS_NAMES = ["cat", "dog & wolf", HOSTILE_CLASS]
N_SAMPLES = 10_000
PLANTED_CLUSTER = 3
DATA_URI = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")


def _cluster_row(cluster_id, size, acs, **changes):
    row = {
        "cluster_id": cluster_id, "size": size, "acs": acs, "acs_reason": None,
        "label_entropy": 0.1, "label_entropy_reason": None, "top_label": 0, "top_label_share": 0.95,
        "prediction_concentration": 0.9, "top_prediction": 0, "prediction_reason": None,
        "accuracy": 0.93, "accuracy_reason": None, "flagged": False, "flag_reasons": [],
    }
    row.update(changes)
    return row


def _snapshot(clusters, accuracy):
    return {
        "accuracy": accuracy, "accuracy_reason": None,
        "worst_group_accuracy": None, "worst_group_reason": "no group labels in this data set",
        "group_definition": None, "n_noise": 120,
        "unavailable_scores": {"worst_group_accuracy": "no group labels in this data set"},
        "clusters": clusters,
    }


def _train_info(losses):
    return {
        "history": [{"epoch": epoch, "loss": loss} for epoch, loss in enumerate(losses)],
        "precision_used": "float32", "precision_note": "bf16 not supported on this CPU", "seconds": 12.5,
    }


def make_audit():
    """Build a full-loop audit with one planted, mitigated attractor."""
    attractor = {
        "id": 1, "cluster_id": PLANTED_CLUSTER, "member_count": 300, "member_ids": list(range(300)),
        "classes": {"cat": 100, "dog & wolf": 100, HOSTILE_CLASS: 100},
        "acs_before": 14.2, "acs_after": 1.1, "acs_after_reason": None,
        "label_entropy": 0.99, "prediction_concentration": 0.97, "top_prediction": 2,
        "accuracy_before": 0.34, "accuracy_after": 0.91,
        "probe": {
            "kind": "image", "box": [0, 0, 4, 4], "localization": 0.82, "exit_rate": 0.9,
            "entry_rate": 0.7, "control_entry_rate": 0.02, "n_members_probed": 64,
            "n_nonmembers_probed": 64, "feature_clusters": [PLANTED_CLUSTER],
            "extended_member_count": 310, "notes": ["patch found in the top-left corner"],
        },
        "cause": "spurious_correlation",
        "cause_evidence": ["pasting the patch pulls 70% of non-members in; a control patch pulls 2%"],
        "remedy": "patch_augmentation", "remedy_reason": "the pull is carried by one local feature",
        "alternatives": [{"remedy": "collapse_penalty", "why_not": "the embeddings are not collapsed overall"}],
        "verified": True,
        "summary": "300 inputs of 3 classes sit in one tight cluster because of a corner patch.",
    }
    return {
        "schema_version": "1.0",
        "tool": {"name": "mitigate", "version": "0.1.0"},
        "created": "2024-05-01T12:00:00+00:00",
        "kind": "run",
        "recipe": {"name": "planted_patch", "path": "recipes/planted_patch.py", "settings": {"epochs": 3, "lr": 0.01}},
        "data": {"source": "synthetic planted patch", "n_train": 20_000, "n_audit": N_SAMPLES,
                 "class_names": list(CLASS_NAMES)},
        "model": {"factory": "small_cnn", "layer": "fc1", "baseline_weights": "baseline.safetensors",
                  "retrained_weights": "retrained.safetensors"},
        "training": {"baseline": _train_info([1.2, 0.8, 0.5]), "retrained": _train_info([1.1, 0.7, None])},
        "detection_settings": {"reducer": "umap", "n_neighbors": 15, "min_cluster_size": 50,
                               "acs_threshold": 1.25, "acs_reference": "class-matched"},
        "environment": {"python": "3.11.9", "platform": "Linux-x86_64", "threads": 2,
                        "libraries": {"numpy": np.__version__, "torch": "2.4.0"}},
        "before": _snapshot([
            _cluster_row(0, 3000, 1.0),
            _cluster_row(1, 3000, 1.1, top_label=1, top_prediction=1),
            _cluster_row(2, 3580, 0.9, top_label=2, top_prediction=2),
            _cluster_row(PLANTED_CLUSTER, 300, 14.2, label_entropy=0.99, top_label_share=0.34,
                         prediction_concentration=0.97, top_prediction=2, accuracy=0.34, flagged=True,
                         flag_reasons=["ACS 14.2 >= 1.25", "3 classes, one prediction"]),
            _cluster_row(4, 1, None, acs_reason="fewer than 2 members", label_entropy=None,
                         label_entropy_reason="fewer than 2 members", accuracy=1.0),
        ], accuracy=0.88),
        "after": _snapshot([_cluster_row(0, 3300, 1.0), _cluster_row(1, 3300, 1.0),
                            _cluster_row(2, 3280, 1.0, top_label=2, top_prediction=2)], accuracy=0.93),
        "attractors": [attractor],
        "verification": {
            "checks": [
                {"name": "attractor ACS below threshold", "passed": True, "detail": "1.1 < 1.25",
                 "before": 14.2, "after": 1.1, "limit": 1.25},
                {"name": "accuracy not lower", "passed": True, "detail": "0.93 >= 0.88 - 0.01",
                 "before": 0.88, "after": 0.93, "limit": 0.87},
            ],
            "new_attractors": [],
        },
        "verdict": "mitigated",
        "verdict_reasons": ["the attractor's ACS fell from 14.2 to 1.1", "accuracy rose from 0.88 to 0.93"],
        "evaluation": {"planted_group": "inputs with the corner patch",
                       "core": {"precision": 1.0, "recall": 0.97, "f1": 0.985}, "extended": None},
        "log_file": "run.log",
    }


def make_arrays(n_samples=N_SAMPLES, seed=0):
    """Build UMAP coordinates with a tight planted cluster of mixed classes."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=n_samples)
    centres = np.array([[0.0, 0.0], [8.0, 0.0], [4.0, 7.0]])
    coords_before = centres[labels] + rng.normal(size=(n_samples, 2))
    clusters_before = labels.copy()
    planted = np.zeros(n_samples, dtype=bool)
    planted[:300] = True
    coords_before[planted] = [4.0, 2.5] + 0.1 * rng.normal(size=(300, 2))
    clusters_before[planted] = PLANTED_CLUSTER
    clusters_before[300:420] = -1
    coords_after = centres[labels] + rng.normal(size=(n_samples, 2))

    images = rng.uniform(0.0, 0.4, size=(12, 16, 16))
    images[:, :4, :4] = 1.0
    attribution = np.zeros((4, 4))
    attribution[0, 0] = 1.0
    return {
        "coords_before": coords_before, "coords_after": coords_after, "labels": labels,
        "clusters_before": clusters_before, "clusters_after": labels.copy(),
        "attractor_masks": [planted],
        "member_images": [images],
        "attribution_maps": [attribution],
        "probe_examples": [{"original": images[:4], "removed": images[:4] * 0.5, "pasted": images[4:8]}],
    }


def make_detect_audit():
    """Turn the full audit into a detection-only one (no retraining, no verification)."""
    audit = make_audit()
    audit.update(kind="detect", recipe=None, training=None, after=None, verification=None,
                 verdict="attractors found", verdict_reasons=["cluster 3 has ACS 14.2"])
    audit["model"]["retrained_weights"] = None
    attractor = audit["attractors"][0]
    attractor.update(acs_after=None, acs_after_reason="detection only: no retraining",
                     accuracy_after=None, remedy=None, remedy_reason="detection only", verified=None)
    return audit


def make_no_attractor_audit():
    audit = make_detect_audit()
    audit.update(attractors=[], verdict="no attractor found", verdict_reasons=["no cluster is flagged"])
    return audit


def strip_images(page):
    """Remove the base64 figures, whose random letters can spell any short word."""
    return DATA_URI.sub("data:", page)


@pytest.fixture(scope="module")
def page():
    return render_html(make_audit(), make_arrays())


@pytest.fixture(scope="module")
def detect_page():
    arrays = make_arrays()
    for key in ("coords_after", "clusters_after"):
        del arrays[key]
    return render_html(make_detect_audit(), arrays)


def test_page_makes_no_network_reference(page):
    references = re.findall(r"""\b(?:src|href)\s*=\s*["']?([^"'\s>]*)""", page, flags=re.IGNORECASE)
    assert references
    for reference in references:
        assert reference.startswith(("data:image/png;base64,", "#")), reference
    assert "url(" not in page
    assert "@import" not in page
    assert "<link" not in page


def test_page_shows_verdict(page):
    assert "verdict-mitigated" in page
    assert ">mitigated</span>" in page
    assert "the attractor&#39;s ACS fell from 14.2 to 1.1" in page


def test_page_has_one_img_per_figure(page):
    # Scatter by cluster, scatter by class, member images, attribution, probe examples, loss curves.
    assert page.count("<img ") == 6


def test_detect_page_has_one_img_per_figure(detect_page):
    # No retraining: no loss curves, and single-panel scatter plots.
    assert detect_page.count("<img ") == 5
    assert "attractors found" in detect_page
    assert "after retraining" not in strip_images(detect_page).split("<h2")[0]


def test_page_escapes_hostile_class_name(page):
    assert HOSTILE_CLASS not in page
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "dog &amp; wolf" in page


def test_page_shows_reason_for_null_score(page):
    assert "n/a (fewer than 2 members)" in page
    assert "n/a (no group labels in this data set)" in page
    # A null loss in the training history.
    assert "n/a (not recorded)" in page


def test_detect_page_shows_reason_for_null_after(detect_page):
    assert "n/a (detection only: no retraining)" in detect_page


@pytest.mark.parametrize("word", ["NaN", "None", "nan", "inf"])
def test_page_never_shows_missing_value_words(page, detect_page, word):
    for html in (page, detect_page):
        assert not re.search(rf"\b{word}\b", strip_images(html)), word


def test_page_size_under_limit(page):
    assert len(page.encode("utf-8")) < 2_000_000


def test_page_says_when_points_are_sampled():
    n_samples = 20_500
    audit = make_audit()
    arrays = make_arrays(n_samples=n_samples)
    for key in ("member_images", "attribution_maps", "probe_examples"):
        del arrays[key]
    audit["training"] = None
    html = render_html(audit, arrays)
    n_shown = subsample_by_cluster(arrays["clusters_before"]).size
    assert f"Showing {n_shown:,} of {n_samples:,} points" in html
    assert html.count("<img ") == 2


def test_detect_page_sample_note_names_one_panel():
    arrays = make_arrays(n_samples=20_500)
    for key in ("coords_after", "clusters_after", "member_images", "attribution_maps", "probe_examples"):
        del arrays[key]
    html = render_html(make_detect_audit(), arrays)
    n_shown = subsample_by_cluster(arrays["clusters_before"]).size
    assert f"Showing {n_shown:,} of 20,500 points: a random sample stratified by cluster (seed 0)." in html
    assert "every panel" not in html


def test_subsample_keeps_every_cluster_in_proportion():
    sizes = {0: 30_000, 1: 9_990, 2: 10, -1: 50}
    clusters = np.concatenate([np.full(size, cluster_id) for cluster_id, size in sizes.items()])
    rows = subsample_by_cluster(clusters, max_points=20_000, seed=0)
    sampled_clusters = clusters[rows]
    fraction = 20_000 / clusters.size
    assert np.unique(rows).size == rows.size
    for cluster_id, size in sizes.items():
        assert (sampled_clusters == cluster_id).sum() == max(1, round(size * fraction)), cluster_id


def test_subsample_is_reproducible():
    clusters = np.random.default_rng(1).integers(-1, 5, size=30_000)
    first = subsample_by_cluster(clusters, max_points=20_000, seed=0)
    assert np.array_equal(first, subsample_by_cluster(clusters, max_points=20_000, seed=0))
    assert not np.array_equal(first, subsample_by_cluster(clusters, max_points=20_000, seed=1))


def test_subsample_keeps_all_rows_under_limit():
    clusters = np.array([0, 0, 1, -1])
    assert np.array_equal(subsample_by_cluster(clusters, max_points=10), np.arange(4))


def test_page_highlights_tokens_in_escaped_texts():
    audit = make_audit()
    audit["attractors"][0]["probe"]["kind"] = "text"
    arrays = {
        "member_texts": [["<b>free</b> MONEY now", "unrelated moneyless text"]],
        "highlight_tokens": [["money"]],
    }
    html = render_html(audit, arrays)
    assert "&lt;b&gt;free&lt;/b&gt; <mark>MONEY</mark> now" in html
    assert "unrelated moneyless text" in html
    assert "<b>" not in html


def test_page_without_arrays_keeps_loss_figure():
    html = render_html(make_audit(), {})
    assert html.count("<img ") == 1
    assert "Attractor audit: planted_patch" in html


def test_render_rejects_mask_list_of_wrong_length():
    arrays = make_arrays(n_samples=500)
    arrays["attractor_masks"] = arrays["attractor_masks"] * 2
    with pytest.raises(ValueError, match=r"attractor_masks.*2 entries.*1 attractor"):
        render_html(make_audit(), arrays)


def test_render_rejects_coords_of_wrong_shape():
    arrays = make_arrays(n_samples=500)
    arrays["coords_before"] = arrays["coords_before"][:, :1]
    with pytest.raises(ValueError, match=r"coords_before.*expected \(n_samples, 2\)"):
        render_html(make_audit(), arrays)


def test_render_rejects_arrays_of_different_lengths():
    arrays = make_arrays(n_samples=500)
    arrays["labels"] = arrays["labels"][:-1]
    with pytest.raises(ValueError, match=r"labels.*499 rows.*500"):
        render_html(make_audit(), arrays)


def test_render_rejects_invalid_audit():
    audit = make_audit()
    del audit["before"]
    with pytest.raises(ValueError, match="'before' is a required property"):
        render_html(audit, {})


def test_markdown_is_short_and_has_verdict():
    text = render_markdown(make_audit())
    assert len(text.splitlines()) < 40
    assert "mitigated" in text
    assert "| A1 | 300 |" in text


def test_markdown_escapes_hostile_class_name():
    text = render_markdown(make_audit())
    assert "<script>" not in text
    assert "&lt;script&gt;alert\\(1\\)&lt;/script&gt;" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_markdown_stays_short_with_many_attractors():
    audit = make_audit()
    audit["attractors"] = [dict(audit["attractors"][0], id=index) for index in range(30)]
    audit["verdict_reasons"] = [f"reason {index}" for index in range(30)]
    audit["verification"]["checks"] = [
        dict(audit["verification"]["checks"][0], name=f"check {index}", passed=False) for index in range(30)
    ]
    text = render_markdown(audit)
    assert len(text.splitlines()) < 40
    assert "and 22 more attractor(s)" in text


def test_markdown_for_detection_only():
    text = render_markdown(make_detect_audit())
    assert "attractors found" in text
    assert "Verification" not in text
    assert "(before retraining)" in text


@pytest.mark.parametrize("make", [make_audit, make_detect_audit, make_no_attractor_audit])
def test_schema_accepts_valid_reports(make):
    validate_report(make())


def test_schema_file_is_valid_draft_2020_12():
    import json

    import jsonschema

    with open(SCHEMA_PATH, encoding="utf-8") as handle:
        jsonschema.Draft202012Validator.check_schema(json.load(handle))


def test_schema_rejects_nan_string_in_number_field():
    audit = make_audit()
    audit["before"]["clusters"][0]["acs"] = "NaN"
    with pytest.raises(ValueError, match=r"\$\.before\.clusters\[0\]\.acs: 'NaN' is not of type"):
        validate_report(audit)


def test_schema_rejects_nan_float():
    audit = make_audit()
    audit["attractors"][0]["acs_before"] = float("nan")
    with pytest.raises(ValueError, match=r"\$\.attractors\[0\]\.acs_before: is not a finite number"):
        validate_report(audit)


@pytest.mark.parametrize("key", ["schema_version", "tool", "created", "kind", "data", "before",
                                 "attractors", "verdict", "verdict_reasons"])
def test_schema_rejects_missing_required_key(key):
    audit = make_audit()
    del audit[key]
    with pytest.raises(ValueError, match=f"'{key}' is a required property"):
        validate_report(audit)


def test_schema_rejects_unknown_key_in_fixed_object():
    audit = make_audit()
    audit["before"]["clusters"][0]["members"] = [1, 2]
    with pytest.raises(ValueError, match=r"\$\.before\.clusters\[0\].*'members' was unexpected"):
        validate_report(audit)


def test_schema_keeps_probe_and_settings_open():
    audit = make_audit()
    audit["attractors"][0]["probe"]["patch_size"] = 4
    audit["detection_settings"]["new_option"] = {"nested": [1, 2]}
    validate_report(audit)


def test_schema_rejects_detect_report_with_after():
    audit = make_detect_audit()
    audit["after"] = copy.deepcopy(audit["before"])
    with pytest.raises(ValueError, match=r"\$\.after: .* is not of type 'null'"):
        validate_report(audit)


def test_no_attractor_verdict_rejects_attractors():
    audit = make_detect_audit()
    audit["verdict"] = "no attractor found"
    with pytest.raises(ValueError, match=r"\$\.attractors: .* is expected to be empty"):
        validate_report(audit)


def test_schema_rejects_non_dict():
    with pytest.raises(ValueError, match="audit must be a dict, got list"):
        validate_report([])


def test_import_does_not_load_matplotlib():
    code = "import sys, mitigate.report; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_page_for_no_attractor_report():
    arrays = make_arrays(n_samples=500)
    arrays["attractor_masks"] = []
    for key in ("coords_after", "clusters_after", "member_images", "attribution_maps", "probe_examples"):
        del arrays[key]
    html = render_html(make_no_attractor_audit(), arrays)
    assert "verdict-no-attractor-found" in html
    assert "No attractor was found." in html
    assert html.count("<img ") == 2


def test_page_with_only_required_keys():
    audit = make_no_attractor_audit()
    for key in ("recipe", "model", "training", "detection_settings", "environment", "after",
                "verification", "evaluation", "log_file"):
        del audit[key]
    html = render_html(audit, {})
    assert "Attractor audit: detection" in html
    assert "<img " not in html
    assert not re.search(r"\bNone\b", html)


def test_page_without_probe_or_remedy():
    audit = make_detect_audit()
    audit["attractors"][0]["probe"] = None
    html = render_html(audit, {})
    assert "No probe ran for this attractor." in html
    assert "n/a (detection only)" in html


def test_probe_examples_leave_out_empty_rows():
    from mitigate.report import plots

    images = np.random.default_rng(0).random((3, 8, 8))
    empty = np.zeros((0, 8, 8))
    # An attractor that contains every input has no non-members to paste onto.
    assert plots.probe_examples(images, images * 0.5, empty).startswith("data:image/png;base64,")
    assert plots.probe_examples(empty, empty, empty) is None
