import numpy as np
import pytest

from mitigate import scores
from mitigate.constants import NOISE_LABEL
from mitigate.detect import AttractorDetector

from conftest import planted_blobs


def flagged_mask(detector, n):
    mask = np.zeros(n, dtype=bool)
    for attractor in detector.attractors_:
        mask[attractor.members] = True
    return mask


def test_detector_finds_planted_attractor(blobs):
    embeddings, labels, predictions, planted = blobs
    detector = AttractorDetector(random_state=0).fit(embeddings, labels, predictions)
    assert len(detector.attractors_) == 1
    found = flagged_mask(detector, len(labels))
    result = scores.precision_recall_f1(found, planted)
    assert result["precision"] >= 0.9
    assert result["recall"] >= 0.9


def test_detector_null_control_flags_nothing(null_blobs):
    embeddings, labels, predictions, _ = null_blobs
    detector = AttractorDetector(random_state=0).fit(embeddings, labels, predictions)
    assert detector.attractors_ == []
    assert len(detector.clusters_) >= 2


def test_detector_estimator_contract(blobs):
    embeddings, labels, predictions, _ = blobs
    detector = AttractorDetector(min_cluster_size=20)
    before = dict(vars(detector))
    assert detector.fit(embeddings, labels, predictions) is detector
    for name, value in before.items():
        assert getattr(detector, name) == value
    assert detector.labels_.shape == (len(labels),)
    assert detector.coords_.shape == (len(labels), 2)


def test_detector_string_labels(blobs):
    embeddings, labels, predictions, _ = blobs
    names = np.array(["cat", "dog", "emu", "fox"])
    detector = AttractorDetector().fit(embeddings, names[labels], names[predictions])
    assert len(detector.attractors_) == 1
    assert detector.attractors_[0].top_prediction == "cat"


def test_detector_without_labels_reports_unavailable(blobs):
    embeddings, _, _, _ = blobs
    detector = AttractorDetector().fit(embeddings)
    assert "label_entropy" in detector.unavailable_scores_
    assert "accuracy" in detector.unavailable_scores_
    assert detector.acs_reference_ == "all rows"


def test_detector_same_seed_same_clusters(blobs):
    embeddings, labels, predictions, _ = blobs
    first = AttractorDetector(random_state=3).fit(embeddings, labels, predictions).labels_
    second = AttractorDetector(random_state=3).fit(embeddings, labels, predictions).labels_
    np.testing.assert_array_equal(first, second)


def test_assign_returns_fitted_cluster(blobs):
    embeddings, labels, predictions, planted = blobs
    detector = AttractorDetector().fit(embeddings, labels, predictions)
    attractor = detector.attractors_[0]
    assigned = detector.assign(embeddings[attractor.members[:10]] + 0.01)
    assert set(assigned) <= set(attractor.cluster_ids)


def test_noise_never_scored_as_cluster(blobs):
    embeddings, labels, predictions, _ = blobs
    detector = AttractorDetector().fit(embeddings, labels, predictions)
    assert all(c.cluster_id != NOISE_LABEL for c in detector.clusters_)


def test_detector_rejects_bad_metric():
    with pytest.raises(ValueError, match="invalid metric='manhattan'"):
        AttractorDetector(metric="manhattan").fit(np.zeros((10, 2)))


def test_planted_blobs_scores_are_separated():
    embeddings, labels, predictions, planted = planted_blobs(seed=4)
    detector = AttractorDetector().fit(embeddings, labels, predictions)
    attractor = detector.attractors_[0]
    assert attractor.acs >= detector.acs_threshold_
    assert attractor.label_entropy >= 0.5
    assert attractor.prediction_concentration == pytest.approx(1.0)


def two_fragment_attractor(fragment_prediction: int):
    """Return blobs of 6 classes with one attractor split into two far-apart fragments.

    Fragment A takes a fifth of classes 1, 2 and 3, all predicted as class 0.
    Fragment B takes 12 rows of class 0 and 24 of class 4, predicted as
    ``fragment_prediction``: with 0 it is mixed and wrong but pulls only one
    class, so it is flagged only as part of the whole attractor.
    """
    rng = np.random.default_rng(5)
    dims = 16
    centres = rng.normal(scale=8.0, size=(8, dims))
    labels = np.repeat(np.arange(6), 150)
    embeddings = centres[labels] + rng.normal(size=(labels.size, dims))
    predictions = labels.copy()

    in_a = np.isin(labels, [1, 2, 3]) & (rng.random(labels.size) < 0.2)
    embeddings[in_a] = centres[6] + 0.3 * rng.normal(size=(in_a.sum(), dims))
    predictions[in_a] = 0

    in_b = np.zeros(labels.size, dtype=bool)
    in_b[np.flatnonzero(labels == 0)[:12]] = True
    in_b[np.flatnonzero(labels == 4)[:24]] = True
    embeddings[in_b] = centres[7] + 0.3 * rng.normal(size=(in_b.sum(), dims))
    predictions[in_b] = fragment_prediction
    return embeddings.astype(np.float32), labels, predictions, in_a, in_b


def test_fragment_pulling_one_class_merged():
    embeddings, labels, predictions, in_a, in_b = two_fragment_attractor(fragment_prediction=0)
    detector = AttractorDetector(random_state=0).fit(embeddings, labels, predictions)

    assert len(detector.attractors_) == 1
    attractor = detector.attractors_[0]
    assert len(attractor.cluster_ids) >= 2
    found = np.zeros(labels.size, dtype=bool)
    found[attractor.members] = True
    assert found[in_a].mean() > 0.9
    assert found[in_b].mean() > 0.9
    assert not found[~(in_a | in_b)].any()


def test_fragment_with_other_output_not_merged():
    embeddings, labels, predictions, in_a, in_b = two_fragment_attractor(fragment_prediction=4)
    detector = AttractorDetector(random_state=0).fit(embeddings, labels, predictions)

    assert len(detector.attractors_) == 1
    found = np.zeros(labels.size, dtype=bool)
    found[detector.attractors_[0].members] = True
    assert found[in_a].mean() > 0.9
    assert not found[in_b].any()


def _narrow_space(identical: bool):
    """Four tight class blobs and one cluster that is mostly a single point (a dead zone)."""
    rng = np.random.default_rng(3)
    centres = rng.normal(scale=8.0, size=(4, 8))
    labels = np.repeat(np.arange(4), 150)
    class_rows = centres[labels] + 0.01 * rng.normal(size=(labels.size, 8))
    dead = np.zeros((180, 8)) if identical else 1e-3 * rng.normal(size=(180, 8))
    near = 0.05 * rng.normal(size=(20, 8))
    embeddings = np.vstack([class_rows, dead, near]).astype(np.float32)
    truth = np.r_[np.zeros(labels.size, dtype=bool), np.ones(200, dtype=bool)]
    return embeddings, truth


def test_unlabelled_point_mass_flagged():
    embeddings, truth = _narrow_space(identical=True)
    with pytest.warns(UserWarning, match="no labels given"):
        detector = AttractorDetector(random_state=0).fit(embeddings)
    assert len(detector.attractors_) == 1
    found = flagged_mask(detector, len(truth))
    assert scores.precision_recall_f1(found, truth)["f1"] >= 0.9
    # Flagged by the point mass, not by the relative ACS.
    attractor = detector.attractors_[0]
    assert attractor.relative_acs < detector.relative_acs_threshold
    assert attractor.point_share == pytest.approx(0.9)
    assert any("share one embedding" in reason for reason in attractor.flag_reasons)


def test_spread_cluster_is_no_point_mass():
    embeddings, _ = _narrow_space(identical=False)
    with pytest.warns(UserWarning, match="no labels given"):
        detector = AttractorDetector(random_state=0).fit(embeddings)
    assert detector.attractors_ == []
