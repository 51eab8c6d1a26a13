"""Every loss against a naive reference written with Python loops over float64 values.

Inputs are built in each dtype, and the reference receives the same values,
after the rounding of that dtype, as Python floats. Losses upcast half precision to
float32, so float16 and bfloat16 share the float32 tolerance.
"""

import math

import numpy as np
import pytest
import torch

from losses import (
    AlignmentLoss,
    BarlowTwinsLoss,
    CollapsePenalty,
    CovarianceLoss,
    EffectiveRankLoss,
    SpectralDecouplingLoss,
    SupConLoss,
    UniformityLoss,
    VarianceLoss,
    VICRegLoss,
)
from losses import functional

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
N_SAMPLES, N_DIMS = 9, 5


def _tolerance(dtype):
    if dtype == torch.float64:
        return {"rel": 1e-9, "abs": 1e-10}
    return {"rel": 2e-4, "abs": 2e-5}


def _expected_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _embeddings(dtype, *, seed=0, n_samples=N_SAMPLES, n_dims=N_DIMS):
    generator = torch.Generator().manual_seed(seed)
    # Columns on different scales, so some standard deviations fall below 1 and some above.
    scales = torch.linspace(0.3, 1.8, n_dims, dtype=torch.float64)
    values = torch.randn(n_samples, n_dims, generator=generator, dtype=torch.float64) * scales
    return values.to(dtype)


def _rows(tensor):
    """Return the tensor's values as nested lists of Python floats (float64)."""
    return tensor.double().tolist()


def _columns(rows):
    return [list(column) for column in zip(*rows)]


def _unit(row, eps=1e-12):
    norm = math.sqrt(sum(value * value for value in row))
    if norm <= eps:
        return [0.0 for _ in row]
    return [value / norm for value in row]


def _squared_distance(a, b):
    return sum((x - y) ** 2 for x, y in zip(a, b))


def _mean(values):
    return sum(values) / len(values)


def _check_value(loss, reference, dtype):
    assert loss.dtype == _expected_dtype(dtype)
    assert loss.item() == pytest.approx(reference, **_tolerance(dtype))


# Naive references.


def uniformity_reference(rows, t):
    units = [_unit(row) for row in rows]
    terms = []
    for i in range(len(units)):
        for j in range(i + 1, len(units)):
            terms.append(math.exp(-t * _squared_distance(units[i], units[j])))
    return math.log(_mean(terms))


def alignment_reference(rows_a, rows_b, alpha):
    distances = [
        math.sqrt(_squared_distance(_unit(a), _unit(b))) ** alpha for a, b in zip(rows_a, rows_b)
    ]
    return _mean(distances)


def _unbiased_variance(column):
    mean = _mean(column)
    return sum((value - mean) ** 2 for value in column) / (len(column) - 1)


def variance_reference(rows, gamma, eps):
    hinges = [max(0.0, gamma - math.sqrt(_unbiased_variance(c) + eps)) for c in _columns(rows)]
    return _mean(hinges)


def covariance_reference(rows):
    columns = _columns(rows)
    n_samples, n_dims = len(rows), len(columns)
    means = [_mean(column) for column in columns]
    total = 0.0
    for j in range(n_dims):
        for k in range(n_dims):
            if j == k:
                continue
            cov = sum(
                (columns[j][i] - means[j]) * (columns[k][i] - means[k]) for i in range(n_samples)
            ) / (n_samples - 1)
            total += cov**2
    return total / n_dims


def vicreg_reference(rows_a, rows_b, weights, gamma, eps):
    invariance_weight, variance_weight, covariance_weight = weights
    squared_errors = [(x - y) ** 2 for a, b in zip(rows_a, rows_b) for x, y in zip(a, b)]
    return (
        invariance_weight * _mean(squared_errors)
        + variance_weight * (variance_reference(rows_a, gamma, eps) + variance_reference(rows_b, gamma, eps))
        + covariance_weight * (covariance_reference(rows_a) + covariance_reference(rows_b))
    )


def _standardized_columns(rows, eps):
    standardized = []
    for column in _columns(rows):
        mean = _mean(column)
        biased_variance = _mean([(value - mean) ** 2 for value in column])
        standardized.append([(value - mean) / math.sqrt(biased_variance + eps) for value in column])
    return standardized


def barlow_twins_reference(rows_a, rows_b, off_diagonal_weight, eps):
    columns_a = _standardized_columns(rows_a, eps)
    columns_b = columns_a if rows_b is None else _standardized_columns(rows_b, eps)
    n_samples = len(rows_a)
    on_diagonal = off_diagonal = 0.0
    for j, column_a in enumerate(columns_a):
        for k, column_b in enumerate(columns_b):
            correlation = sum(x * y for x, y in zip(column_a, column_b)) / n_samples
            if j == k:
                on_diagonal += (1 - correlation) ** 2
            else:
                off_diagonal += correlation**2
    return on_diagonal + off_diagonal_weight * off_diagonal


def supcon_reference(rows, labels, temperature):
    units = [_unit(row) for row in rows]
    n_samples = len(units)
    anchor_losses = []
    for i in range(n_samples):
        positives = [p for p in range(n_samples) if p != i and labels[p] == labels[i]]
        if not positives:
            continue
        logits = [sum(x * y for x, y in zip(units[i], units[a])) / temperature for a in range(n_samples)]
        normalizer = math.log(sum(math.exp(logits[a]) for a in range(n_samples) if a != i))
        anchor_losses.append(-_mean([logits[p] - normalizer for p in positives]))
    return _mean(anchor_losses)


def spectral_decoupling_reference(rows, weight):
    return weight / 2 * _mean([sum(value * value for value in row) for row in rows])


def effective_rank_reference(rows, eps):
    # numpy's LAPACK SVD in float64 gives the singular values; the rest is loops.
    singular_values = np.linalg.svd(np.array(rows, dtype=np.float64), compute_uv=False).tolist()
    total = sum(singular_values)
    probabilities = [value / total + eps for value in singular_values]
    return math.exp(-sum(p * math.log(p) for p in probabilities))


def _mean_pairwise_squared_distance(rows):
    distances = [
        _squared_distance(rows[i], rows[j])
        for i in range(len(rows))
        for j in range(len(rows))
        if i != j
    ]
    return _mean(distances)


def acs_reference(rows, mask, eps):
    members = [row for row, is_member in zip(rows, mask) if is_member]
    # Half the mean squared distance over pairs i != j is the covariance trace.
    batch_trace = _mean_pairwise_squared_distance(rows) / 2
    members_trace = _mean_pairwise_squared_distance(members) / 2
    return (batch_trace + eps) / (members_trace + eps)


# Tests.


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("t", [2.0, 0.5])
def test_uniformity_matches_reference(dtype, t):
    embeddings = _embeddings(dtype)
    reference = uniformity_reference(_rows(embeddings), t)

    _check_value(UniformityLoss(t=t)(embeddings), reference, dtype)
    _check_value(functional.uniformity(embeddings, t=t), reference, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha", [2.0, 1.0, 0.5])
def test_alignment_matches_reference(dtype, alpha):
    view_a = _embeddings(dtype, seed=0)
    view_b = _embeddings(dtype, seed=1)
    reference = alignment_reference(_rows(view_a), _rows(view_b), alpha)

    _check_value(AlignmentLoss(alpha=alpha)(view_a, view_b), reference, dtype)
    _check_value(functional.alignment(view_a, view_b, alpha=alpha), reference, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gamma", [1.0, 1.5])
def test_variance_matches_reference(dtype, gamma):
    embeddings = _embeddings(dtype)
    reference = variance_reference(_rows(embeddings), gamma, 1e-4)

    assert reference > 0
    _check_value(VarianceLoss(gamma=gamma)(embeddings), reference, dtype)
    _check_value(functional.variance(embeddings, gamma=gamma), reference, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_covariance_matches_reference(dtype):
    embeddings = _embeddings(dtype)
    reference = covariance_reference(_rows(embeddings))

    _check_value(CovarianceLoss()(embeddings), reference, dtype)
    _check_value(functional.covariance(embeddings), reference, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_vicreg_matches_reference(dtype):
    view_a = _embeddings(dtype, seed=0)
    view_b = _embeddings(dtype, seed=1)
    weights = (25.0, 25.0, 1.0)
    reference = vicreg_reference(_rows(view_a), _rows(view_b), weights, 1.0, 1e-4)

    _check_value(VICRegLoss()(view_a, view_b), reference, dtype)
    _check_value(functional.vicreg(view_a, view_b), reference, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_vicreg_weights_match_reference(dtype):
    view_a = _embeddings(dtype, seed=2)
    view_b = _embeddings(dtype, seed=3)
    weights = (1.0, 2.0, 0.5)
    reference = vicreg_reference(_rows(view_a), _rows(view_b), weights, 1.2, 1e-3)
    loss = VICRegLoss(
        invariance_weight=1.0, variance_weight=2.0, covariance_weight=0.5, gamma=1.2, eps=1e-3
    )(view_a, view_b)

    _check_value(loss, reference, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("two_views", [True, False])
def test_barlow_twins_matches_reference(dtype, two_views):
    view_a = _embeddings(dtype, seed=0)
    view_b = _embeddings(dtype, seed=1) if two_views else None
    rows_b = _rows(view_b) if two_views else None
    reference = barlow_twins_reference(_rows(view_a), rows_b, 5e-3, 1e-5)

    _check_value(BarlowTwinsLoss()(view_a, view_b), reference, dtype)
    _check_value(functional.barlow_twins(view_a, view_b), reference, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_supcon_matches_reference(dtype, temperature):
    embeddings = _embeddings(dtype)
    # Class 3 has a single sample, so its anchor has no positive and is left out.
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 3])
    reference = supcon_reference(_rows(embeddings), labels.tolist(), temperature)

    _check_value(SupConLoss(temperature=temperature)(embeddings, labels), reference, dtype)
    _check_value(functional.supcon(embeddings, labels, temperature=temperature), reference, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_spectral_decoupling_matches_reference(dtype):
    logits = _embeddings(dtype) * 3
    reference = spectral_decoupling_reference(_rows(logits), 0.1)

    _check_value(SpectralDecouplingLoss()(logits), reference, dtype)
    _check_value(functional.spectral_decoupling(logits), reference, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(9, 5), (4, 7)])
def test_effective_rank_matches_reference(dtype, shape):
    embeddings = _embeddings(dtype, n_samples=shape[0], n_dims=shape[1])
    reference = effective_rank_reference(_rows(embeddings), 1e-7)

    _check_value(functional.effective_rank(embeddings), reference, dtype)
    _check_value(EffectiveRankLoss(normalize=False)(embeddings), -reference, dtype)
    _check_value(EffectiveRankLoss()(embeddings), -reference / min(shape), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["hinge", "squared"])
def test_collapse_penalty_matches_reference(dtype, mode):
    embeddings = _embeddings(dtype)
    # Shrink the members toward their mean, so ACS > 1 and the hinge is active.
    mask = torch.tensor([True, True, True, True, False, False, False, False, False])
    shrunk = embeddings.double().clone()
    shrunk[mask] = shrunk[mask].mean(dim=0) + 0.2 * (shrunk[mask] - shrunk[mask].mean(dim=0))
    embeddings = shrunk.to(dtype)
    acs = acs_reference(_rows(embeddings), mask.tolist(), 1e-8)
    reference = max(0.0, math.log(acs)) if mode == "hinge" else math.log(acs) ** 2

    assert acs > 1
    _check_value(CollapsePenalty(mode=mode)(embeddings, mask), reference, dtype)
    _check_value(functional.collapse_penalty(embeddings, mask, mode=mode), reference, dtype)
    _check_value(functional.attractor_collapse_score(embeddings, mask), acs, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_collapse_penalty_hinge_zero_when_spread(dtype):
    embeddings = _embeddings(dtype)
    # Members spread wider than the batch: ACS < 1, so the hinge is 0.
    mask = torch.zeros(N_SAMPLES, dtype=torch.bool)
    spread = embeddings.double().clone()
    spread[:3] *= 10
    mask[:3] = True
    acs = acs_reference(_rows(spread.to(dtype)), mask.tolist(), 1e-8)

    assert acs < 1
    assert CollapsePenalty()(spread.to(dtype), mask).item() == 0.0
    _check_value(CollapsePenalty(mode="squared")(spread.to(dtype), mask), math.log(acs) ** 2, dtype)
