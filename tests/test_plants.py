"""Planted benchmarks: each plant writes what it claims, and its ground truth matches the images."""

import numpy as np
import pytest

from mitigate.data import ImageSplits
from mitigate.plants import (
    DEFAULTS,
    MECHANISMS,
    code_patterns,
    dead_zone_rows,
    make_benchmark,
    subsample_splits,
)


def synthetic_splits(n_train=400, n_audit=300, seed=0):
    """Dark random images (values below 0.3) of 10 classes, so planted pixels stand out."""
    rng = np.random.default_rng(seed)
    return ImageSplits(
        train_images=(0.3 * rng.random((n_train, 1, 28, 28))).astype(np.float32),
        train_labels=np.arange(n_train) % 10,
        audit_images=(0.3 * rng.random((n_audit, 1, 28, 28))).astype(np.float32),
        audit_labels=np.arange(n_audit) % 10,
        class_names=tuple(f"class {k}" for k in range(10)),
        source="synthetic",
    )


@pytest.fixture(scope="module")
def splits():
    return synthetic_splits()


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_benchmark_shapes_and_range(splits, mechanism):
    benchmark = make_benchmark(mechanism, splits, seed=0)
    assert benchmark.mechanism == mechanism
    assert benchmark.train_images.shape == splits.train_images.shape
    assert benchmark.audit_images.shape == splits.audit_images.shape
    assert benchmark.train_images.dtype == np.float32
    assert benchmark.audit_images.min() >= 0.0
    assert benchmark.audit_images.max() <= 1.0
    assert benchmark.groups.shape == splits.audit_labels.shape
    assert benchmark.description


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_benchmark_same_seed_same_data(splits, mechanism):
    first = make_benchmark(mechanism, splits, seed=3)
    second = make_benchmark(mechanism, splits, seed=3)
    np.testing.assert_array_equal(first.train_images, second.train_images)
    np.testing.assert_array_equal(first.audit_images, second.audit_images)


def test_clean_changes_nothing(splits):
    benchmark = make_benchmark("clean", splits, seed=0)
    np.testing.assert_array_equal(benchmark.train_images, splits.train_images)
    np.testing.assert_array_equal(benchmark.audit_images, splits.audit_images)
    assert benchmark.truth is None
    np.testing.assert_array_equal(benchmark.groups, 2 * splits.audit_labels)


def test_spurious_square_on_truth_rows_only(splits):
    benchmark = make_benchmark("spurious_correlation", splits, seed=0)
    top, left, height, width = benchmark.extra["box"]
    region = benchmark.audit_images[:, 0, top:top + height, left:left + width]
    painted = np.all(region == 1.0, axis=(1, 2))
    np.testing.assert_array_equal(painted, benchmark.truth)
    assert 0.15 < benchmark.truth.mean() < 0.45


def test_spurious_square_tied_to_target_in_training(splits):
    benchmark = make_benchmark("spurious_correlation", splits, seed=0)
    carries = benchmark.extra["train_carries"]
    target = benchmark.train_labels == benchmark.extra["target_class"]
    assert carries[target].mean() > 0.9
    assert carries[~target].mean() == 0.0


def test_spurious_groups_mark_class_and_square(splits):
    benchmark = make_benchmark("spurious_correlation", splits, seed=0)
    expected = 2 * splits.audit_labels + benchmark.truth.astype(int)
    np.testing.assert_array_equal(benchmark.groups, expected)


def test_starvation_training_code_never_contradicts_label(splits):
    benchmark = make_benchmark("gradient_starvation", splits, seed=0)
    codes = benchmark.extra["train_codes"]
    carried = codes >= 0
    assert carried.mean() > 0.9
    np.testing.assert_array_equal(codes[carried], benchmark.train_labels[carried])


def test_starvation_truth_is_code_disagreement(splits):
    benchmark = make_benchmark("gradient_starvation", splits, seed=0)
    codes = benchmark.extra["audit_codes"]
    np.testing.assert_array_equal(benchmark.truth, codes != benchmark.audit_labels)
    stuck_classes = DEFAULTS["gradient_starvation"]["stuck_classes"]
    assert np.isin(benchmark.audit_labels[benchmark.truth], stuck_classes).all()
    assert np.all(codes[benchmark.truth] == benchmark.extra["stuck_class"])


def test_starvation_code_pixels_match_code(splits):
    benchmark = make_benchmark("gradient_starvation", splits, seed=0)
    top, left, height, width = benchmark.extra["box"]
    region = benchmark.audit_images[:, 0, top:top + height, left:left + width]
    expected = benchmark.extra["codes"][benchmark.extra["audit_codes"]]
    np.testing.assert_array_equal(region, expected)


def test_artifact_pattern_on_site_rows_only(splits):
    benchmark = make_benchmark("data_artifact", splits, seed=0)
    changed = np.any(benchmark.audit_images != splits.audit_images, axis=(1, 2, 3))
    np.testing.assert_array_equal(changed, benchmark.truth)
    expected = np.clip(splits.audit_images[benchmark.truth] + benchmark.extra["pattern"], 0, 1)
    np.testing.assert_allclose(benchmark.audit_images[benchmark.truth], expected)


def test_artifact_site_prevalence_differs_in_training(splits):
    benchmark = make_benchmark("data_artifact", splits, seed=0)
    site = benchmark.extra["train_site"]
    site_class = benchmark.extra["site_class"]
    assert np.mean(benchmark.train_labels[site] == site_class) == 1.0
    assert 0.1 < np.mean(benchmark.truth) < 0.5


def test_collapse_truth_from_dead_zone(splits):
    benchmark = make_benchmark("representational_collapse", splits, seed=0)
    assert benchmark.truth is None
    assert benchmark.model_kwargs == {"embedding_dim": 3}
    embeddings = np.ones((splits.audit_labels.shape[0], 3), dtype=np.float32)
    embeddings[:50] = 0.0
    truth = benchmark.resolve_truth(embeddings)
    assert truth.sum() == 50
    assert truth[:50].all()
    np.testing.assert_array_equal(benchmark.groups[:50], 2 * splits.audit_labels[:50] + 1)


def test_collapse_truth_rejects_wrong_row_count(splits):
    benchmark = make_benchmark("representational_collapse", splits, seed=0)
    with pytest.raises(ValueError, match="embed benchmark.audit_images"):
        benchmark.resolve_truth(np.zeros((7, 3)))


def test_resolve_truth_keeps_planted_truth(splits):
    benchmark = make_benchmark("spurious_correlation", splits, seed=0)
    planted = benchmark.truth.copy()
    assert benchmark.resolve_truth(np.zeros((splits.audit_labels.shape[0], 3))) is benchmark.truth
    np.testing.assert_array_equal(benchmark.truth, planted)


def test_dead_zone_rows_exact_zero_only():
    embeddings = np.array([[0.0, 0.0], [0.0, 1e-30], [1.0, 0.0]])
    np.testing.assert_array_equal(dead_zone_rows(embeddings), [True, False, False])


def test_unknown_mechanism_rejected(splits):
    with pytest.raises(ValueError, match="invalid mechanism 'typo'"):
        make_benchmark("typo", splits, seed=0)


def test_foreign_option_rejected(splits):
    with pytest.raises(ValueError, match="unknown option.*'stuck_class'"):
        make_benchmark("spurious_correlation", splits, seed=0, stuck_class=3)


def test_class_option_out_of_range(splits):
    with pytest.raises(ValueError, match="target_class=12 is outside the 10 classes"):
        make_benchmark("spurious_correlation", splits, seed=0, target_class=12)


def test_code_patterns_far_apart():
    codes = code_patterns(10, size=3, min_distance=3, rng=np.random.default_rng(0))
    assert codes.shape == (10, 3, 3)
    for i in range(10):
        for j in range(i + 1, 10):
            assert np.sum(codes[i] != codes[j]) >= 3


def test_code_patterns_impossible_request():
    with pytest.raises(ValueError, match="could not draw 10 codes"):
        code_patterns(10, size=2, min_distance=4, rng=np.random.default_rng(0))


def test_subsample_splits_sizes_and_seed(splits):
    first = subsample_splits(splits, n_train=100, n_audit=50, seed=1)
    second = subsample_splits(splits, n_train=100, n_audit=50, seed=1)
    assert first.train_images.shape[0] == 100
    assert first.audit_labels.shape[0] == 50
    np.testing.assert_array_equal(first.train_images, second.train_images)
    whole = subsample_splits(splits, n_train=None, n_audit=10_000, seed=1)
    assert whole.audit_labels.shape[0] == splits.audit_labels.shape[0]
