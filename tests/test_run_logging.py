"""What `mitigate run` leaves besides the report: quiet stderr, run.log, TensorBoard scalars, progress lines."""

import json
import logging
import re
from pathlib import Path

import pytest

from mitigate import progress
from mitigate.audit import log_scores_to_tracker, tracked_scores

from small_run import small_run, small_run_stderr
from test_report_render import make_audit, make_detect_audit

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [\w.]+ (DEBUG|INFO|WARNING|ERROR) ")


def read_scalars(folder: Path) -> dict:
    """Return {tag: [(step, value), ...]} from every TensorBoard event file under ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = {}
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(path))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((event.step, event.value) for event in accumulator.Scalars(tag))
    return scalars


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return small_run(tmp_path_factory)


@pytest.fixture(scope="module")
def run_audit(run_dir):
    return json.loads((run_dir / "report.json").read_text())


def test_quiet_run_writes_no_info_to_stderr(tmp_path_factory, run_dir):
    stderr = small_run_stderr(tmp_path_factory)
    assert " INFO " not in stderr
    # No progress lines either: --quiet turns the bars and their log lines off.
    assert "started (" not in stderr


def test_run_log_records_every_stage(run_dir, run_audit):
    text = (run_dir / "run.log").read_text()
    lines = text.splitlines()
    assert lines
    for line in lines:
        assert LOG_LINE.match(line), line
    # --quiet turns progress lines off everywhere, but the stages still log to the file.
    for expected in ("loaded Fashion-MNIST" if "fashion" in run_audit["data"]["source"] else "digits",
                     "epoch 1/2: mean loss", "detection:", "wrote ", f"verdict: {run_audit['verdict']}"):
        assert expected in text, expected
    assert "started (" not in text
    assert run_audit["log_file"] == "run.log"


def test_tracker_holds_training_loss(run_dir, run_audit):
    scalars = read_scalars(run_dir / "tracking")
    runs = [run_audit["training"]["baseline"]] + ([run_audit["training"]["retrained"]]
                                                  if run_audit["training"]["retrained"] else [])
    expected = [entry["loss"] for info in runs for entry in info["history"]]
    logged = [value for _, value in scalars["train/loss"]]
    assert sorted(logged) == pytest.approx(sorted(expected), rel=1e-5)


def test_tracker_holds_audit_scores(run_dir, run_audit):
    scalars = read_scalars(run_dir / "tracking")
    expected = {key: value for key, value in tracked_scores(run_audit).items() if not isinstance(value, str)}
    assert "audit/accuracy_before" in expected
    for tag, value in expected.items():
        assert tag in scalars, tag
        assert scalars[tag][-1][1] == pytest.approx(value, rel=1e-5), tag


def test_tracker_holds_after_scores_of_planted_attractor(run_dir, run_audit):
    if "fashion" not in run_audit["data"]["source"]:
        pytest.skip("needs Debian's dataset-fashion-mnist: the digits fallback plants no attractor to retrain")
    assert run_audit["after"] is not None, run_audit["verdict_reasons"]
    scalars = read_scalars(run_dir / "tracking")
    for tag in ("audit/accuracy_after", "audit/worst_group_accuracy_after", "audit/A0/member_acs_before",
                "audit/A0/member_acs_after"):
        assert tag in scalars, tag
    assert scalars["audit/A0/member_acs_after"][-1][1] < scalars["audit/A0/member_acs_before"][-1][1]


def test_tracked_scores_leave_out_nulls():
    audit = make_detect_audit()
    values = tracked_scores(audit)
    assert values["audit/A1/member_acs_before"] == 14.2
    assert "audit/A1/member_acs_after" not in values
    assert "audit/worst_group_accuracy_before" not in values
    assert values["audit/verdict"] == "attractors found"


def tensorboard_audit():
    audit = make_audit()
    audit["recipe"]["settings"] = {"train": {"log_with": "tensorboard"}}
    return audit


def test_log_scores_writes_after_scores(tmp_path):
    log_scores_to_tracker(tensorboard_audit(), tmp_path / "tracking")
    scalars = read_scalars(tmp_path / "tracking")
    assert scalars["audit/A1/member_acs_after"][0][1] == pytest.approx(1.1)
    assert scalars["audit/accuracy_after"][0][1] == pytest.approx(0.93)


@pytest.mark.parametrize("change", ["detect", "no tracker"])
def test_log_scores_skipped(tmp_path, change):
    audit = tensorboard_audit()
    if change == "detect":
        audit = make_detect_audit()
    else:
        audit["recipe"]["settings"]["train"]["log_with"] = "none"
    log_scores_to_tracker(audit, tmp_path / "tracking")
    assert not (tmp_path / "tracking").exists()


def test_progress_logs_interim_lines_without_terminal(monkeypatch, caplog):
    monkeypatch.setattr(progress, "LOG_INTERVAL_SECONDS", 0.0)
    with caplog.at_level(logging.INFO, logger="mitigate.progress"):
        assert list(progress.progress_bar(range(3), desc="stage")) == [0, 1, 2]
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0] == "stage: started (3 steps)"
    assert messages[1].startswith("stage: step 1 of 3")
    assert messages[-1].startswith("stage: done (3 steps in ")


def test_progress_disabled_logs_nothing(caplog):
    with caplog.at_level(logging.INFO, logger="mitigate.progress"):
        assert list(progress.progress_bar(range(3), desc="stage", enabled=False)) == [0, 1, 2]
    assert caplog.records == []
