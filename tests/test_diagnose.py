"""Root-cause rules for image attractors, the pattern and region probes, and the "pulls several classes" flag."""

from types import SimpleNamespace

import numpy as np
import pytest

from mitigate.detect import AttractorDetector
from mitigate.diagnose import diagnose_image_attractor
from mitigate.probes import (
    PatternProbeResult,
    RegionLabelEvidence,
    pattern_spread,
    probe_image_pattern,
    region_label_evidence,
)

CLUSTER = SimpleNamespace(top_prediction=0, prediction_concentration=0.9)
CAUSAL_SQUARE = SimpleNamespace(causal=True, box=(1, 23, 4, 4), exit_rate=1.0, entry_rate=1.0,
                                control_entry_rate=0.0)
NOT_CAUSAL = SimpleNamespace(causal=False, box=(10, 10, 6, 6), exit_rate=0.1, entry_rate=0.0,
                             control_entry_rate=0.0)


def pattern_result(*, spread, causal=True):
    rates = (0.9, 0.9, 0.05) if causal else (0.1, 0.1, 0.0)
    return PatternProbeResult(pattern=np.zeros((1, 28, 28)), spread=spread, exit_rate=rates[0],
                              entry_rate=rates[1], control_entry_rate=rates[2],
                              n_members_probed=50, n_nonmembers_probed=50)


def diagnose(probe, **kwargs):
    settings = dict(image_shape=(28, 28), presence_by_class=None, class_names=None, rank_share=0.3)
    settings.update(kwargs)
    return diagnose_image_attractor(CLUSTER, probe, **settings)


def test_low_rank_per_class_names_collapse():
    diagnosis = diagnose(CAUSAL_SQUARE, effective_rank=2.5, n_classes=10)
    assert diagnosis.cause == "representational_collapse"
    assert "effective rank 2.5" in diagnosis.evidence[0]


def test_wide_rank_skips_collapse_rule():
    diagnosis = diagnose(CAUSAL_SQUARE, effective_rank=15.0, n_classes=10,
                         presence_by_class={0: 0.99, 1: 0.0, 2: 0.01})
    assert diagnosis.cause == "spurious_correlation"


def test_spread_pattern_names_artifact():
    diagnosis = diagnose(NOT_CAUSAL, pattern_probe=pattern_result(spread=0.9))
    assert diagnosis.cause == "data_artifact"
    assert any("90% of the image" in line for line in diagnosis.evidence)


def test_localized_pattern_not_artifact():
    diagnosis = diagnose(CAUSAL_SQUARE, pattern_probe=pattern_result(spread=0.02),
                         presence_by_class={0: 0.99, 1: 0.0})
    assert diagnosis.cause == "spurious_correlation"


def test_label_code_region_names_starvation():
    region = RegionLabelEvidence(accuracy=0.97, majority_rate=0.1, member_agreement=0.9)
    diagnosis = diagnose(CAUSAL_SQUARE, region_evidence=region, presence_by_class={0: 0.98, 1: 0.0})
    assert diagnosis.cause == "gradient_starvation"
    assert any("97% of training labels" in line for line in diagnosis.evidence)


def test_region_not_followed_stays_spurious():
    region = RegionLabelEvidence(accuracy=0.97, majority_rate=0.1, member_agreement=0.2)
    diagnosis = diagnose(CAUSAL_SQUARE, region_evidence=region, presence_by_class={0: 0.98, 1: 0.0})
    assert diagnosis.cause == "spurious_correlation"


def test_feature_on_several_classes_names_artifact():
    diagnosis = diagnose(CAUSAL_SQUARE, presence_by_class={0: 0.4, 1: 0.35, 2: 0.3})
    assert diagnosis.cause == "data_artifact"


def test_nothing_found_is_undetermined():
    diagnosis = diagnose(NOT_CAUSAL, pattern_probe=pattern_result(spread=0.9, causal=False),
                         effective_rank=15.0, n_classes=10)
    assert diagnosis.cause == "undetermined"
    assert any("no shared pattern" in line for line in diagnosis.evidence)


def test_pattern_spread_square_and_noise():
    square = np.zeros((1, 28, 28))
    square[0, 1:5, 23:27] = 1.0
    assert pattern_spread(square) == pytest.approx(16 / 784)
    noise = (np.random.default_rng(0).random((1, 28, 28)) < 0.3).astype(float)
    assert pattern_spread(noise) > 0.9
    assert pattern_spread(np.zeros((1, 28, 28))) == 0.0


def noise_world(seed=0):
    """Images where a fixed noise pattern, not the content, decides membership of cluster 1."""
    rng = np.random.default_rng(seed)
    pattern = 0.8 * (rng.random((1, 28, 28)) < 0.3)
    images = 0.2 * rng.random((400, 1, 28, 28))
    labels = np.arange(400) % 4
    marked = np.arange(400) < 100
    images[marked] = np.clip(images[marked] + pattern, 0, 1)
    direction = pattern.ravel() / np.linalg.norm(pattern)

    def embed(batch):
        batch = np.asarray(batch).reshape(len(batch), -1)
        return np.stack([batch @ direction, batch.mean(axis=1)], axis=1)

    def assign(embeddings):
        # Cluster 1 when the projection on the pattern is at least half of a marked image's.
        return (embeddings[:, 0] > 0.5 * np.linalg.norm(pattern)).astype(int)

    return images, labels, marked.astype(int), embed, assign


def test_pattern_probe_finds_noise_pattern():
    images, labels, cluster_ids, embed, assign = noise_world()
    result = probe_image_pattern(images, cluster_ids, [1], labels, embed=embed, assign=assign, seed=0)
    assert result.exit_rate > 0.9
    assert result.entry_rate > 0.9
    assert result.control_entry_rate < 0.2
    assert result.causal
    assert result.spread > 0.9


def test_pattern_probe_control_without_pattern_overlap():
    images, labels, cluster_ids, embed, assign = noise_world(seed=1)
    result = probe_image_pattern(images, cluster_ids, [1], labels, embed=embed, assign=assign, seed=1)
    assert result.control_entry_rate == 0.0


def coded_images(n=2000, seed=0):
    """Images with a class code in the top-left 3x3 box, and a square on class 0 only at the top right."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    codes = rng.random((10, 3, 3)) < 0.5
    images = 0.1 * rng.random((n, 1, 28, 28))
    images[:, 0, 1:4, 1:4] = codes[labels]
    images[labels == 0, 0, 1:5, 23:27] = 1.0
    return images, labels


def test_region_evidence_code_region():
    images, labels = coded_images()
    members = images[labels == 0]
    evidence = region_label_evidence(images, labels, (1, 1, 3, 3), members, 0, seed=0)
    assert evidence.accuracy > 0.95
    assert evidence.majority_rate == pytest.approx(0.1, abs=0.02)
    assert evidence.member_agreement == 1.0


def test_region_evidence_one_class_square():
    images, labels = coded_images()
    members = images[labels == 0]
    evidence = region_label_evidence(images, labels, (1, 23, 4, 4), members, 0, seed=0)
    assert evidence.accuracy < 0.4
    assert evidence.member_agreement == 1.0


def boundary_blobs(n_pulled_classes: int, seed: int = 0):
    """Four well-predicted classes plus one tight, wrong cluster predicted as class 0.

    The tight cluster contains 60 members of class 0 and 60 of each of
    ``n_pulled_classes`` other classes, all predicted as class 0.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=8.0, size=(5, 16))
    labels = np.repeat(np.arange(4), 150)
    embeddings = centres[labels] + rng.normal(size=(labels.size, 16))
    predictions = labels.copy()
    tight_labels = np.repeat(np.arange(n_pulled_classes + 1), 60)
    tight = centres[4] + 0.3 * rng.normal(size=(tight_labels.size, 16))
    embeddings = np.vstack([embeddings, tight]).astype(np.float32)
    labels = np.concatenate([labels, tight_labels])
    predictions = np.concatenate([predictions, np.zeros_like(tight_labels)])
    return embeddings, labels, predictions


def test_two_class_boundary_not_flagged():
    embeddings, labels, predictions = boundary_blobs(n_pulled_classes=1)
    detector = AttractorDetector(random_state=0).fit(embeddings, labels, predictions)
    tight = [c for c in detector.clusters_ if c.size == 120]
    assert len(tight) == 1
    assert not tight[0].flagged
    assert any(r.startswith("pulls several classes: no") for r in tight[0].flag_reasons)
    assert detector.attractors_ == []


def test_three_pulled_classes_flagged():
    embeddings, labels, predictions = boundary_blobs(n_pulled_classes=3)
    detector = AttractorDetector(random_state=0).fit(embeddings, labels, predictions)
    assert len(detector.attractors_) == 1
    assert detector.attractors_[0].size == 240
