"""The detection benchmark's fast variant: one seed, reduced data, every mechanism.

The full benchmark (five seeds, 20,000 training and 5,000 audit images) is
``benchmarks/detection.py``. This variant trains on as many images but audits
2,000, and checks the same targets, loosened for one seed. With 8,000
training images the clean model is too weak to be a null control: its
pullover, shirt and coat rows form a real confusion cluster that the
detector rightly flags. It also checks that a detector that flags
everything or nothing misses them.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from mitigate.data import DEFAULT_FASHION_DIR, find_fashion_files

ROOT = Path(__file__).resolve().parents[1]
FAST = {"seeds": [0], "n_train": 20_000, "n_audit": 2000}
# Loose targets for one seed of the fast variant (the full benchmark's are
# median F1 0.8 and the right cause in 4 of 5 seeds per mechanism).
FAST_MIN_F1 = 0.6
FAST_MIN_CAUSES_RIGHT = 3

needs_fashion = pytest.mark.skipif(
    find_fashion_files(DEFAULT_FASHION_DIR) is None,
    reason="needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)",
)


def load_benchmark_module():
    spec = importlib.util.spec_from_file_location("detection_benchmark", ROOT / "benchmarks" / "detection.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = load_benchmark_module()


def fast_failures(summary: dict) -> list:
    """Return the fast variant's missed targets, one sentence each."""
    failures = []
    causes_right = 0
    for mechanism, entry in summary.items():
        if mechanism == "clean":
            if any(entry["ours"]["flagged"]):
                failures.append(f"clean control flagged {entry['ours']['flagged']}")
            if "unlabelled" in entry and any(entry["unlabelled"]["flagged"]):
                failures.append(f"clean control without labels flagged {entry['unlabelled']['flagged']}")
            continue
        f1 = entry["ours"]["median_f1"]
        if f1 is None or f1 < FAST_MIN_F1:
            failures.append(f"{mechanism}: F1 {f1} below {FAST_MIN_F1}")
        causes_right += entry["cause_right"]
        if mechanism in bench.UNLABELLED_TARGETS:
            f1 = entry["unlabelled"]["median_f1"]
            if f1 is None or f1 < FAST_MIN_F1:
                failures.append(f"{mechanism} without labels: F1 {f1} below {FAST_MIN_F1}")
    if causes_right < FAST_MIN_CAUSES_RIGHT:
        failures.append(f"root cause right for {causes_right} mechanisms, expected {FAST_MIN_CAUSES_RIGHT}")
    return failures


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    import torch

    from mitigate.data import load_fashion_mnist
    from mitigate.plants import MECHANISMS

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        splits = load_fashion_mnist(fallback=False)
        cache = tmp_path_factory.mktemp("detection-cache")
        results = bench.run_benchmark(mechanisms=list(MECHANISMS), cache_dir=cache, splits=splits, **FAST)
    finally:
        torch.set_num_threads(threads)
    return {"results": results, "summary": bench.summarise(results), "cache": cache, "splits": splits}


@needs_fashion
def test_fast_variant_meets_loose_targets(fast_run):
    assert fast_failures(fast_run["summary"]) == []


@needs_fashion
def test_fast_variant_clean_control_flags_nothing(fast_run):
    assert fast_run["summary"]["clean"]["ours"]["flagged"] == [0]


@needs_fashion
@pytest.mark.parametrize("flag_all", [True, False])
def test_broken_detector_misses_targets(fast_run, monkeypatch, flag_all):
    from mitigate.detect import AttractorDetector

    def broken_flag(self, cluster):
        cluster.flagged = flag_all
        cluster.flag_reasons = ["broken: yes" if flag_all else "broken: no (test)"]

    monkeypatch.setattr(AttractorDetector, "_flag", broken_flag)
    # The "pulls several classes" check runs after _flag and would unflag
    # most clusters again, so the broken detector skips it too.
    monkeypatch.setattr(AttractorDetector, "_check_pulled", lambda self, cluster, labels, predictions: None)
    results = bench.run_benchmark(mechanisms=["spurious_correlation", "clean"], cache_dir=fast_run["cache"],
                                  splits=fast_run["splits"], **FAST)
    failures = fast_failures(bench.summarise(results))
    assert failures
    if flag_all:
        assert any("clean control" in failure for failure in failures)
    else:
        assert any("spurious_correlation: F1" in failure for failure in failures)


def test_score_attractors_picks_best_match():
    class Found:
        def __init__(self, members):
            self.members = np.asarray(members)

    truth = np.zeros(10, dtype=bool)
    truth[:4] = True
    summary = bench.score_attractors([Found([5, 6]), Found([0, 1, 2, 7])], truth)
    assert summary["n_flagged"] == 2
    assert summary["best_index"] == 1
    assert summary["precision"] == pytest.approx(0.75)
    assert summary["recall"] == pytest.approx(0.75)


def test_score_attractors_nothing_flagged():
    truth = np.array([True, False])
    summary = bench.score_attractors([], truth)
    assert summary["f1"] == 0.0
    assert summary["best_index"] is None


def test_check_targets_reports_each_miss():
    summary = {
        "spurious_correlation": {"seeds": [0, 1, 2, 3, 4], "ours": {"median_f1": 0.5, "flagged": [1] * 5},
                                 "cause_right": 2, "causes": ["data_artifact"] * 5},
        "clean": {"seeds": [0, 1, 2, 3, 4], "ours": {"median_f1": None, "flagged": [0, 1, 0, 0, 0]},
                  "cause_right": 0, "causes": [None] * 5},
    }
    failures = bench.check_targets(summary)
    assert len(failures) == 3
    assert any("median F1 0.50 below 0.8" in failure for failure in failures)
    assert any("root cause right in 2 of 5" in failure for failure in failures)
    assert any("clean control" in failure for failure in failures)


def test_check_targets_unlabelled_scope():
    entry = {"seeds": [0], "ours": {"median_f1": 0.9, "flagged": [1]}, "cause_right": 1,
             "causes": ["x"], "unlabelled": {"median_f1": 0.1, "flagged": [1]}}
    summary = {"gradient_starvation": dict(entry, causes=["gradient_starvation"]),
               "spurious_correlation": dict(entry, causes=["spurious_correlation"])}
    failures = bench.check_targets(summary)
    assert failures == ["spurious_correlation without labels: median F1 0.10 below 0.8"]
