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
