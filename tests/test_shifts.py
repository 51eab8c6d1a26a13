"""Translated copies: planted copies must be found, distinct groups must not."""

import numpy as np
import pytest

from mitigate import scores
from mitigate.constants import NOISE_LABEL
from mitigate.detect import AttractorDetector
from mitigate.shifts import copy_translation, find_translated_copies

from conftest import COPY_DIMS, copied_groups

def test_copy_translation_recovers_shift():
    rng = np.random.default_rng(1)
    fixed = rng.normal(size=(300, 5))
    moving = fixed[:200] - np.array([3.0, 0, 0, 0, 1.0])
    shift, fit = copy_translation(moving, fixed)
    np.testing.assert_allclose(shift, [3.0, 0, 0, 0, 1.0], atol=1e-6)
    assert fit == pytest.approx(0.0, abs=1e-6)


def test_three_planted_copies_found():
    embeddings, ids = copied_groups(3)
    copies, reason = find_translated_copies(embeddings, embeddings, ids)
    assert copies is not None
    assert sorted(copies.carriers) == [3, 4, 5]
    assert dict(zip(copies.carriers, copies.partners)) == {3: 0, 4: 1, 5: 2}
    assert min(copies.cosines) > 0.9
    assert max(copies.fits) < 2.0
    assert copies.carrier_norm > copies.partner_norm


def test_two_groups_pick_feature_shift():
    # Groups 0 and 1 have one shape, group 1 a little wider, so the four
    # clusters 0, 1 and their copies 2, 3 form a parallelogram. The pairs
    # (group, copy) and the pairs (group 0, group 1) both share a direction.
    # The copies fit better. Clusters 4 and 5 are unrelated groups.
    rng = np.random.default_rng(4)
    plane = rng.normal(scale=1.5, size=(4, COPY_DIMS))
    shift = np.r_[np.full(4, 6.0), np.zeros(COPY_DIMS - 4)]
    centres = [np.abs(rng.normal(scale=8.0, size=COPY_DIMS)) for _ in range(4)]
    shapes = [plane, 1.3 * plane, plane, 1.3 * plane]
    centres[2], centres[3] = centres[0] + shift, centres[1] + shift
    for _ in range(2):
        shapes.append(rng.normal(scale=1.5, size=(4, COPY_DIMS)))
        centres.append(np.abs(rng.normal(scale=8.0, size=COPY_DIMS)))
    embeddings = np.vstack([
        centre + rng.normal(size=(200, 4)) @ shape + 0.1 * rng.normal(size=(200, COPY_DIMS))
        for centre, shape in zip(centres, shapes)
    ])
    ids = np.repeat(np.arange(6), 200)

    copies, reason = find_translated_copies(embeddings, embeddings, ids)

    assert reason is None
    assert dict(zip(copies.carriers, copies.partners)) == {2: 0, 3: 1}


def test_distinct_groups_have_no_copies():
    embeddings, ids = copied_groups(6, copies=False)
    assert find_translated_copies(embeddings, embeddings, ids) == (None, None)


def test_isotropic_blobs_too_alike_to_judge():
    # Identical round blobs are all copies of one another, and among 30 of
    # them some translations point the same way by chance.
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=8.0, size=(30, COPY_DIMS))
    ids = np.repeat(np.arange(30), 200)
    embeddings = centres[ids] + rng.normal(size=(ids.size, COPY_DIMS))
    copies, reason = find_translated_copies(embeddings, np.abs(embeddings), ids)
    assert copies is None
    assert "fit as copies" in reason


def test_few_dimensions_rejected_with_reason():
    embeddings, ids = copied_groups(3)
    copies, reason = find_translated_copies(embeddings[:, :3], embeddings[:, :3], ids)
    assert copies is None
    assert "the embeddings have 3 dimension(s)" in reason


def test_copies_independent_of_cluster_numbering():
    embeddings, ids = copied_groups(3)
    renamed = np.array([7, 2, 9, 4, 0, 5])[ids]
    copies, _ = find_translated_copies(embeddings, embeddings, renamed)
    assert sorted(copies.carriers) == [0, 4, 5]


def test_noise_and_tiny_clusters_ignored():
    embeddings, ids = copied_groups(3)
    ids = ids.copy()
    ids[:3] = NOISE_LABEL
    extra = np.full((3, COPY_DIMS), 50.0, dtype=np.float32)
    rows = np.vstack([embeddings, extra])
    copies, _ = find_translated_copies(rows, rows, np.r_[ids, [99, 99, 99]])
    assert sorted(copies.carriers) == [3, 4, 5]


def test_detector_flags_copies_without_labels():
    embeddings, ids = copied_groups(3)
    truth = ids >= 3
    with pytest.warns(UserWarning, match="translated copies"):
        detector = AttractorDetector(random_state=0).fit(embeddings)
    assert len(detector.attractors_) == 1
    attractor = detector.attractors_[0]
    found = np.zeros(len(ids), dtype=bool)
    found[attractor.members] = True
    assert scores.precision_recall_f1(found, truth)["f1"] >= 0.95
    assert attractor.flag_reasons[0].startswith("translated copies: yes")
    assert detector.translated_copies_ is not None


def test_detector_copy_rule_off():
    embeddings, _ = copied_groups(3)
    with pytest.warns(UserWarning, match="no labels given") as caught:
        detector = AttractorDetector(random_state=0, copy_fit_threshold=None).fit(embeddings)
    assert detector.attractors_ == []
    assert detector.translated_copies_ is None
    assert detector.unavailable_scores_["translated copies"].startswith("turned off")
    assert not any("translated copies" in str(w.message) for w in caught)


def test_detector_copy_rule_skipped_with_labels():
    # With labels the copies are ordinary, correctly predicted classes.
    embeddings, ids = copied_groups(3)
    labels = ids % 3
    detector = AttractorDetector(random_state=0).fit(embeddings, labels, labels)
    assert detector.attractors_ == []
    assert detector.translated_copies_ is None


@pytest.mark.parametrize("value", [0, -1, float("nan"), "2", True, [2.0]])
def test_detector_rejects_bad_copy_fit_threshold(value):
    embeddings, _ = copied_groups(2)
    with pytest.raises(ValueError, match="copy_fit_threshold must be a positive number"):
        AttractorDetector(copy_fit_threshold=value).fit(embeddings)


def test_duplicate_rows_still_match():
    # Copies of a row would make a cluster's neighbour spacing zero.
    embeddings, ids = copied_groups(3)
    doubled = np.vstack([embeddings, embeddings])
    copies, reason = find_translated_copies(doubled, doubled, np.r_[ids, ids])
    assert reason is None
    assert sorted(copies.carriers) == [3, 4, 5]


def test_too_few_clusters_give_reason():
    embeddings, ids = copied_groups(1)
    copies, reason = find_translated_copies(embeddings, embeddings, ids)
    assert copies is None
    assert "at least 4 clusters" in reason


def test_detector_finds_copies_under_cosine_metric():
    embeddings, ids = copied_groups(3)
    with pytest.warns(UserWarning, match="no labels given"):
        detector = AttractorDetector(random_state=0, metric="cosine").fit(embeddings)
    assert len(detector.attractors_) == 1
    found = np.zeros(len(ids), dtype=bool)
    found[detector.attractors_[0].members] = True
    assert scores.precision_recall_f1(found, ids >= 3)["f1"] >= 0.95
