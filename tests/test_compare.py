"""Comparison of two audit reports: matching by member overlap, the written files, the command."""

import copy
import json

import numpy as np
import pytest

from mitigate.cli import main
from mitigate.compare import (
    DEFAULT_MATCH_THRESHOLD,
    ComparisonError,
    compare_reports,
    load_report_folder,
    match_attractors,
    member_jaccard,
    write_comparison,
)
from mitigate.detect import AttractorDetector
from mitigate.detect_command import detect_report
from mitigate.report import validate_report
from mitigate.report.comparison import render_comparison_html, render_comparison_markdown
from mitigate.report.schema import validate_comparison

from conftest import planted_blobs
from small_run import small_run
from test_report_render import HOSTILE_CLASS, make_audit, make_detect_audit, make_no_attractor_audit


def with_attractors(audit, *member_sets, acs=(), accuracy=()):
    """Return a copy of ``audit`` whose attractors have the given member ids."""
    audit = copy.deepcopy(audit)
    template = make_detect_audit()["attractors"][0]
    attractors = []
    for index, members in enumerate(member_sets):
        record = copy.deepcopy(template)
        record.update(id=index, member_ids=list(members), member_count=len(members))
        if index < len(acs):
            record["acs_before"] = acs[index]
        if index < len(accuracy):
            record["accuracy_before"] = accuracy[index]
        attractors.append(record)
    audit["attractors"] = attractors
    if attractors:
        audit["verdict"] = "attractors found"
    return audit


def write_folder(path, audit):
    path.mkdir(parents=True)
    (path / "report.json").write_text(json.dumps(audit))
    return path


# Matching ------------------------------------------------------------------

@pytest.mark.parametrize("first, second", [
    (range(10), range(5, 15)),
    (range(3), range(3)),
    (range(4), range(10, 12)),
    ([1, "a"], ["a", 2, 3]),
])
def test_jaccard_matches_naive_count(first, second):
    first, second = list(first), list(second)
    shared = sum(1 for item in set(first) if item in set(second))
    union = len(set(first) | set(second))
    assert member_jaccard(first, second) == pytest.approx(shared / union)


def test_jaccard_of_empty_sets_is_zero():
    assert member_jaccard([], []) == 0.0


def test_match_is_one_to_one_highest_first():
    before = [{"member_ids": list(range(100))}]
    after = [{"member_ids": list(range(60))}, {"member_ids": list(range(90))}]
    assert match_attractors(before, after, threshold=0.3) == [(0, 1, 0.9)]


def test_match_threshold_is_inclusive():
    before = [{"member_ids": list(range(10))}]
    after = [{"member_ids": list(range(3))}]
    assert match_attractors(before, after, threshold=0.3) == [(0, 0, 0.3)]
    assert match_attractors(before, after, threshold=0.31) == []


def test_default_threshold_exceeds_chance_overlap():
    # Two unrelated member sets, each a quarter of the inputs.
    rng = np.random.default_rng(0)
    n_inputs = 20_000
    first = rng.choice(n_inputs, size=n_inputs // 4, replace=False)
    second = rng.choice(n_inputs, size=n_inputs // 4, replace=False)
    assert member_jaccard(first, second) < DEFAULT_MATCH_THRESHOLD / 2


# Comparison dicts -------------------------------------------------------------

def test_planted_attractor_listed_as_resolved():
    comparison = compare_reports(make_detect_audit(), make_no_attractor_audit())
    validate_comparison(comparison)
    assert comparison["verdict"] == "all attractors resolved"
    assert comparison["counts"] == {"persisting": 0, "resolved": 1, "appeared": 0}
    row = comparison["attractors"][0]
    assert row["status"] == "resolved"
    assert row["before_id"] == 1
    assert row["after_id"] is None
    assert row["acs"] == {"before": 14.2, "after": None, "change": None}
    assert "AFTER lists no attractor" in row["summary"]


def test_persisting_attractor_reports_changes():
    before = with_attractors(make_detect_audit(), range(0, 300), acs=[14.2], accuracy=[0.34])
    after = with_attractors(make_detect_audit(), range(100, 400), acs=[3.0], accuracy=[0.5])
    comparison = compare_reports(before, after)
    validate_comparison(comparison)
    row = comparison["attractors"][0]
    assert row["status"] == "persisting"
    assert row["shared_members"] == 200
    assert row["jaccard"] == pytest.approx(200 / 400)
    assert row["acs"]["change"] == pytest.approx(3.0 - 14.2)
    assert row["accuracy"]["change"] == pytest.approx(0.5 - 0.34)
    assert comparison["verdict"] == "attractors persist"


def test_new_attractor_listed_as_appeared():
    before = with_attractors(make_detect_audit(), range(0, 300))
    after = with_attractors(make_detect_audit(), range(0, 300), range(5000, 5100))
    comparison = compare_reports(before, after)
    validate_comparison(comparison)
    statuses = [row["status"] for row in comparison["attractors"]]
    assert statuses == ["persisting", "appeared"]
    appeared = comparison["attractors"][1]
    assert appeared["before_id"] is None
    assert appeared["after_id"] == 1
    assert appeared["jaccard"] == 0.0
    assert comparison["verdict"] == "new attractors appeared"


def test_no_attractor_on_either_side():
    comparison = compare_reports(make_no_attractor_audit(), make_no_attractor_audit())
    validate_comparison(comparison)
    assert comparison["attractors"] == []
    assert comparison["verdict"] == "no attractor in either report"


def test_overall_scores_and_null_reasons():
    after = make_no_attractor_audit()
    after["before"]["accuracy"] = 0.9
    comparison = compare_reports(make_detect_audit(), after)
    assert comparison["overall"]["accuracy"]["change"] == pytest.approx(0.02)
    assert comparison["overall"]["accuracy"]["reason"] is None
    worst = comparison["overall"]["worst_group_accuracy"]
    assert worst["change"] is None
    assert "no group labels" in worst["reason"]


def test_run_report_compared_through_model_before_retraining():
    comparison = compare_reports(make_audit(), make_no_attractor_audit())
    validate_comparison(comparison)
    assert comparison["before"]["kind"] == "run"
    assert comparison["overall"]["accuracy"]["before"] == make_audit()["before"]["accuracy"]
    assert comparison["attractors"][0]["status"] == "resolved"


def test_class_codes_become_names():
    comparison = compare_reports(make_detect_audit(), make_no_attractor_audit())
    assert comparison["attractors"][0]["top_prediction"]["before"] == HOSTILE_CLASS


def test_different_input_count_rejected():
    after = make_no_attractor_audit()
    after["data"]["n_audit"] = 9_999
    with pytest.raises(ComparisonError, match=r"different inputs: 10000 audit inputs in BEFORE, 9999"):
        compare_reports(make_detect_audit(), after)


def test_different_classes_rejected():
    after = make_no_attractor_audit()
    after["data"]["class_names"] = ["a", "b", "c"]
    with pytest.raises(ComparisonError, match="different classes"):
        compare_reports(make_detect_audit(), after)


def test_sources_recorded_per_report():
    after = make_no_attractor_audit()
    after["data"]["source"] = "audit split of the retrained model"
    comparison = compare_reports(make_detect_audit(), after)
    assert comparison["before"]["source"] == "synthetic planted patch"
    assert comparison["after"]["source"] == "audit split of the retrained model"
    assert "audit split of the retrained model" in render_comparison_html(comparison)


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5])
def test_threshold_outside_range_rejected(threshold):
    with pytest.raises(ComparisonError, match=r"match threshold must be in \(0, 1\]"):
        compare_reports(make_detect_audit(), make_no_attractor_audit(), threshold=threshold)


def test_schema_rejects_nan_in_comparison():
    comparison = compare_reports(make_detect_audit(), make_no_attractor_audit())
    comparison["overall"]["accuracy"]["before"] = float("nan")
    with pytest.raises(ValueError, match=r"\$\.overall\.accuracy\.before: is not a finite number"):
        validate_comparison(comparison)


def test_schema_rejects_resolved_row_with_after_id():
    comparison = compare_reports(make_detect_audit(), make_no_attractor_audit())
    comparison["attractors"][0]["after_id"] = 3
    with pytest.raises(ValueError, match=r"\$\.attractors\[0\]\.after_id: 3 is not of type 'null'"):
        validate_comparison(comparison)


# Rendering ------------------------------------------------------------------------

def test_html_escapes_and_shows_status():
    comparison = compare_reports(make_detect_audit(), make_no_attractor_audit())
    page = render_comparison_html(comparison)
    assert "verdict-all-attractors-resolved" in page
    assert 'class="status-resolved">resolved</td>' in page
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "None" not in page
    assert "src=" not in page


def test_markdown_stays_short_with_many_attractors():
    before = with_attractors(make_detect_audit(), *[range(100 * i, 100 * i + 100) for i in range(30)])
    comparison = compare_reports(before, make_no_attractor_audit())
    text = render_comparison_markdown(comparison)
    assert len(text.splitlines()) < 30
    assert "30 resolved, 0 persisting, 0 appeared" in text
    assert "and 20 more attractor(s)" in text


def test_write_comparison_writes_three_files(tmp_path):
    comparison = compare_reports(make_detect_audit(), make_no_attractor_audit())
    paths = write_comparison(tmp_path / "out", comparison)
    assert sorted(path.name for path in paths.values()) == [
        "comparison.html", "comparison.json", "comparison.md"]
    validate_comparison(json.loads(paths["json"].read_text()))
    assert not list((tmp_path / "out").glob("*.tmp"))


# Command line ------------------------------------------------------------------------

def test_cli_compare_writes_resolved_report(tmp_path):
    before = write_folder(tmp_path / "baseline", make_detect_audit())
    after = write_folder(tmp_path / "retrained", make_no_attractor_audit())
    out = tmp_path / "comparison"
    assert main(["report", "compare", str(before), str(after), "--out", str(out), "--quiet"]) == 0
    comparison = json.loads((out / "comparison.json").read_text())
    validate_comparison(comparison)
    assert [row["status"] for row in comparison["attractors"]] == ["resolved"]
    assert comparison["before"]["path"] == str(before)
    assert "1 resolved" in (out / "comparison.md").read_text()
    assert (out / "comparison.html").stat().st_size > 2_000


def test_cli_compare_threshold_option(tmp_path):
    before = write_folder(tmp_path / "a", with_attractors(make_detect_audit(), range(0, 300)))
    after = write_folder(tmp_path / "b", with_attractors(make_detect_audit(), range(200, 300)))
    out = tmp_path / "out"
    assert main(["report", "compare", str(before), str(after), "--out", str(out), "-q",
                 "--match-threshold", "0.5"]) == 0
    statuses = [row["status"] for row in json.loads((out / "comparison.json").read_text())["attractors"]]
    assert statuses == ["resolved", "appeared"]


def test_cli_compare_missing_report_exits_2(tmp_path, capsys):
    after = write_folder(tmp_path / "retrained", make_no_attractor_audit())
    code = main(["report", "compare", str(tmp_path / "nowhere"), str(after), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "no report.json in" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.invalid_report
def test_cli_compare_invalid_report_exits_2(tmp_path, capsys):
    broken = make_detect_audit()
    del broken["before"]
    before = write_folder(tmp_path / "baseline", broken)
    after = write_folder(tmp_path / "retrained", make_no_attractor_audit())
    assert main(["report", "compare", str(before), str(after), "--out", str(tmp_path / "o")]) == 2
    assert "is not a valid audit report" in capsys.readouterr().err


def test_cli_compare_different_inputs_exits_2(tmp_path, capsys):
    other = make_no_attractor_audit()
    other["data"]["n_audit"] = 5
    before = write_folder(tmp_path / "baseline", make_detect_audit())
    after = write_folder(tmp_path / "retrained", other)
    assert main(["report", "compare", str(before), str(after), "--out", str(tmp_path / "o")]) == 2
    assert "different inputs" in capsys.readouterr().err


def test_cli_report_without_command_exits_2(capsys):
    assert main(["report"]) == 2
    assert "mitigate report compare BEFORE AFTER --out DIR" in capsys.readouterr().err


@pytest.mark.invalid_report
def test_load_report_folder_rejects_bad_json(tmp_path):
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(ComparisonError, match="is not a valid audit report"):
        load_report_folder(tmp_path)


# Real detections ---------------------------------------------------------------------

def detection_report(embeddings, labels, predictions):
    """Run the detector and build its detect-kind report as ``mitigate detect`` does."""
    detector = AttractorDetector(random_state=0).fit(embeddings, labels, predictions)
    report = detect_report(detector, labels=labels, predictions=predictions, source="planted blobs, seed 0")
    validate_report(report)
    return report


def test_detections_of_planted_and_clean_blobs():
    planted = detection_report(*planted_blobs(seed=0)[:3])
    clean = detection_report(*planted_blobs(seed=0, attractor=False)[:3])
    assert len(planted["attractors"]) == 1

    resolved = compare_reports(planted, clean)
    validate_comparison(resolved)
    assert [row["status"] for row in resolved["attractors"]] == ["resolved"]
    same = compare_reports(planted, planted)
    assert [row["status"] for row in same["attractors"]] == ["persisting"]
    assert same["attractors"][0]["jaccard"] == 1.0
    assert same["attractors"][0]["acs"]["change"] == 0.0


def test_compare_run_folders_resolves_planted_attractor(tmp_path_factory, tmp_path):
    out = small_run(tmp_path_factory)
    audit = json.loads((out / "report.json").read_text())
    if "fashion" not in audit["data"]["source"]:
        pytest.skip("needs Debian's dataset-fashion-mnist: the digits fallback plants no attractor to resolve")
    assert audit["verdict"] == "mitigated", audit["verdict_reasons"]
    code = main(["report", "compare", str(out / "baseline"), str(out / "retrained"),
                 "--out", str(tmp_path / "comparison"), "--quiet"])
    assert code == 0

    comparison = json.loads((tmp_path / "comparison" / "comparison.json").read_text())
    validate_comparison(comparison)
    baseline = load_report_folder(out / "baseline")
    planted = audit["attractors"][0]["member_ids"]
    overlaps = [member_jaccard(planted, attractor["member_ids"]) for attractor in baseline["attractors"]]
    assert max(overlaps) >= 0.9
    planted_id = baseline["attractors"][overlaps.index(max(overlaps))]["id"]
    row = next(row for row in comparison["attractors"] if row["before_id"] == planted_id)
    assert row["status"] == "resolved"
    assert comparison["counts"]["appeared"] == 0
