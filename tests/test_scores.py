import numpy as np
import pytest

from mitigate import scores
from mitigate.constants import ACS_FLOOR


def random_rotation(dims, rng):
    q, _ = np.linalg.qr(rng.normal(size=(dims, dims)))
    return q


def naive_mean_squared_distance(x):
    total = 0.0
    for i in range(len(x)):
        for j in range(len(x)):
            total += float(np.sum((x[i] - x[j]) ** 2))
    return total / len(x) ** 2


def test_acs_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5))
    members = np.zeros(40, dtype=bool)
    members[:12] = True
    expected = naive_mean_squared_distance(x) / naive_mean_squared_distance(x[members])
    assert scores.attractor_collapse_score(x, members) == pytest.approx(expected, rel=1e-10)


def test_acs_invariant_to_scale_rotation_translation():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 8))
    members = rng.random(300) < 0.3
    labels = rng.integers(0, 3, size=300)
    rotation = random_rotation(8, rng)
    moved = 7.5 * x @ rotation + rng.normal(size=8) * 100
    for given in (None, labels):
        assert scores.attractor_collapse_score(moved, members, given) == pytest.approx(
            scores.attractor_collapse_score(x, members, given), rel=1e-8
        )


def test_acs_about_one_for_random_subset():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5000, 16))
    labels = rng.integers(0, 5, size=5000)
    members = rng.random(5000) < 0.2
    assert scores.attractor_collapse_score(x, members) == pytest.approx(1.0, abs=0.05)
    assert scores.attractor_collapse_score(x, members, labels) == pytest.approx(1.0, abs=0.05)


def test_acs_grows_as_cluster_contracts():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 4))
    members = np.arange(500) < 100
    centre = x[members].mean(axis=0)
    values = []
    for factor in (1.0, 0.5, 0.25, 0.1):
        contracted = x.copy()
        contracted[members] = centre + factor * (x[members] - centre)
        values.append(scores.attractor_collapse_score(contracted, members))
    assert all(a < b for a, b in zip(values, values[1:]))
    assert all(v >= 0 for v in values)


def test_acs_class_matched_is_one_for_whole_class():
    rng = np.random.default_rng(4)
    labels = np.repeat([0, 1, 2], 200)
    x = rng.normal(size=(600, 6)) + labels[:, None] * 10.0
    whole_class = labels == 1
    assert scores.attractor_collapse_score(x, whole_class, labels) == pytest.approx(1.0, rel=1e-9)
    # Against all rows a single class looks collapsed.
    assert scores.attractor_collapse_score(x, whole_class) > 10


def test_acs_identical_members_capped():
    x = np.vstack([np.zeros((10, 3)), np.random.default_rng(5).normal(size=(50, 3))])
    members = np.arange(60) < 10
    value = scores.attractor_collapse_score(x, members)
    assert np.isfinite(value)
    assert value == pytest.approx(1 / ACS_FLOOR)


def test_acs_rejects_single_member():
    x = np.random.default_rng(6).normal(size=(10, 3))
    with pytest.raises(ValueError, match="at least 2 members, got 1"):
        scores.attractor_collapse_score(x, np.arange(10) == 0)


def test_acs_undefined_when_all_rows_equal():
    value, reason = scores.acs_or_reason(np.ones((5, 2)), np.ones(5, dtype=bool))
    assert value is None
    assert "zero spread" in reason


def test_acs_capped_when_classes_share_one_point():
    # Total collapse: every row at one point, members from two classes.
    x = np.zeros((6, 3))
    labels = np.array([0, 0, 0, 1, 1, 1])
    assert scores.attractor_collapse_score(x, np.ones(6, dtype=bool), labels) == pytest.approx(1 / ACS_FLOOR)
    value, reason = scores.acs_or_reason(x, labels == 0, labels)
    assert value is None
    assert "zero spread" in reason


def test_label_entropy_range():
    assert scores.label_entropy(np.zeros(10, dtype=int), 4) == 0.0
    assert scores.label_entropy(np.arange(8) % 4, 4) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2 classes"):
        scores.label_entropy(np.zeros(3, dtype=int), 1)


def test_prediction_concentration_top_class():
    share, top = scores.prediction_concentration(np.array([2, 2, 2, 1]))
    assert share == 0.75
    assert top == 2


def test_worst_group_skips_small_groups():
    # Group 0: 30 rows, 60% right. Group 1: 2 rows, both wrong.
    labels = np.zeros(32, dtype=int)
    predictions = np.r_[np.zeros(18), np.ones(12), np.ones(2)].astype(int)
    groups = np.r_[np.zeros(30), np.ones(2)].astype(int)
    assert scores.worst_group_accuracy(labels, predictions, groups) == pytest.approx(0.6)
    assert scores.worst_group_accuracy(labels, predictions, groups, min_size=1) == 0.0
    assert scores.small_groups(groups) == {1: 2}


def test_worst_group_accuracy():
    labels = np.array([0, 0, 1, 1])
    predictions = np.array([0, 1, 1, 1])
    groups = np.array([0, 0, 1, 1])
    assert scores.worst_group_accuracy(labels, predictions, groups) == 0.5


def test_precision_recall_f1():
    found = np.array([1, 1, 0, 0], dtype=bool)
    truth = np.array([1, 0, 1, 0], dtype=bool)
    result = scores.precision_recall_f1(found, truth)
    assert result == {"precision": 0.5, "recall": 0.5, "f1": 0.5}
