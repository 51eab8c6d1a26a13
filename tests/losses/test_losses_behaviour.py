"""Behaviour beyond the formulas: recorded statistics, warm-up, invariances, planted collapse."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

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
from losses.functional import effective_rank
from losses.distributed import all_gather_rows, is_distributed


def _embeddings(n_samples=16, n_dims=8, *, seed=0):
    return torch.randn(n_samples, n_dims, generator=torch.Generator().manual_seed(seed))


def _planted_attractor(*, seed=0):
    """Return 32 embeddings whose first 8 rows, the members, sit in a narrow cluster."""
    embeddings = _embeddings(32, 8, seed=seed)
    center = torch.full((8,), 3.0)
    embeddings[:8] = center + 0.05 * embeddings[:8]
    members = torch.zeros(32, dtype=torch.bool)
    members[:8] = True
    return embeddings, members


# last_stats


@pytest.mark.parametrize(
    ("loss", "inputs", "keys"),
    [
        (UniformityLoss(), (_embeddings(),), {"loss", "mean_squared_distance"}),
        (AlignmentLoss(), (_embeddings(), _embeddings(seed=1)), {"loss"}),
        (VarianceLoss(), (_embeddings(),), {"loss", "mean_std", "min_std"}),
        (CovarianceLoss(), (_embeddings(),), {"loss"}),
        (
            VICRegLoss(),
            (_embeddings(), _embeddings(seed=1)),
            {"loss", "invariance", "variance", "covariance"},
        ),
        (BarlowTwinsLoss(), (_embeddings(),), {"loss", "on_diagonal", "off_diagonal"}),
        (SupConLoss(), (_embeddings(), torch.arange(16) % 4), {"loss", "n_anchors"}),
        (SpectralDecouplingLoss(), (_embeddings(),), {"loss", "mean_squared_norm", "step"}),
        (EffectiveRankLoss(), (_embeddings(),), {"loss", "effective_rank"}),
        (
            CollapsePenalty(),
            _planted_attractor(),
            {"loss", "acs", "batch_trace", "members_trace", "n_members"},
        ),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, torch.nn.Module) else "",
)
def test_last_stats_records_loss_and_parts(loss, inputs, keys):
    assert loss.last_stats == {}

    value = loss(*inputs)

    assert set(loss.last_stats) == keys
    assert all(isinstance(stat, float) for stat in loss.last_stats.values())
    assert loss.last_stats["loss"] == pytest.approx(value.item())


def test_vicreg_stats_combine_to_loss():
    loss = VICRegLoss(invariance_weight=2.0, variance_weight=3.0, covariance_weight=0.5)

    value = loss(_embeddings(), _embeddings(seed=1))
    stats = loss.last_stats

    combined = 2.0 * stats["invariance"] + 3.0 * stats["variance"] + 0.5 * stats["covariance"]
    assert value.item() == pytest.approx(combined, rel=1e-6)


def test_last_stats_updates_each_call():
    loss = UniformityLoss()

    loss(_embeddings(seed=0))
    first = loss.last_stats["loss"]
    loss(_embeddings(seed=1))

    assert loss.last_stats["loss"] != first


def test_last_stats_holds_no_graph():
    loss = UniformityLoss()

    loss(_embeddings().requires_grad_(True))

    assert not any(value.requires_grad for value in loss._last_terms.values())


# SupCon without positives


def test_supcon_without_positives_returns_zero_with_graph():
    embeddings = _embeddings(4).requires_grad_(True)
    loss_module = SupConLoss()

    with pytest.warns(UserWarning, match="no sample in the batch shares its label"):
        loss = loss_module(embeddings, torch.arange(4))
    loss.backward()

    assert loss.item() == 0.0
    assert loss.requires_grad
    assert torch.equal(embeddings.grad, torch.zeros_like(embeddings))
    assert loss_module.last_stats["n_anchors"] == 0


def test_supcon_counts_only_anchors_with_positive():
    loss = SupConLoss()

    loss(_embeddings(6), torch.tensor([0, 0, 1, 1, 2, 3]))

    assert loss.last_stats["n_anchors"] == 4


def test_supcon_lower_for_clustered_classes():
    labels = torch.arange(32) % 4
    centers = torch.eye(8)[:4] * 5
    clustered = centers[labels] + 0.1 * _embeddings(32, 8)

    assert functional.supcon(clustered, labels) < functional.supcon(_embeddings(32, 8), labels)


# Spectral decoupling warm-up


def test_spectral_decoupling_counts_training_calls():
    loss = SpectralDecouplingLoss(warmup_steps=2)
    logits = _embeddings(4, 3)

    values = [loss(logits).item() for _ in range(3)]

    assert values[:2] == [0.0, 0.0]
    assert values[2] == pytest.approx(functional.spectral_decoupling(logits).item())
    assert loss.num_calls == 3


def test_spectral_decoupling_warmup_zero_keeps_graph():
    logits = _embeddings(4, 3).requires_grad_(True)
    loss_module = SpectralDecouplingLoss(warmup_steps=1)

    loss = loss_module(logits)
    loss.backward()

    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    assert loss_module.last_stats["mean_squared_norm"] > 0


def test_spectral_decoupling_eval_calls_do_not_count():
    loss = SpectralDecouplingLoss(warmup_steps=1).eval()

    loss(_embeddings(4, 3))

    assert loss.num_calls == 0


def test_spectral_decoupling_explicit_step_overrides_counter():
    loss = SpectralDecouplingLoss(warmup_steps=10)
    logits = _embeddings(4, 3)

    assert loss(logits, step=9).item() == 0.0
    assert loss(logits, step=10).item() > 0
    assert loss.num_calls == 0


def test_spectral_decoupling_counter_survives_state_dict():
    trained = SpectralDecouplingLoss(warmup_steps=5)
    for _ in range(4):
        trained(_embeddings(4, 3))
    resumed = SpectralDecouplingLoss(warmup_steps=5)

    resumed.load_state_dict(trained.state_dict())

    assert resumed.num_calls == 4
    assert resumed(_embeddings(4, 3)).item() == 0.0
    assert resumed(_embeddings(4, 3)).item() > 0


# Invariances and directions


def test_uniformity_invariant_to_row_order_and_scale():
    embeddings = _embeddings()
    permuted = embeddings[torch.randperm(16, generator=torch.Generator().manual_seed(1))]

    reference = functional.uniformity(embeddings).item()

    assert functional.uniformity(permuted).item() == pytest.approx(reference, rel=1e-5)
    assert functional.uniformity(embeddings * 37.0).item() == pytest.approx(reference, rel=1e-5)


@settings(max_examples=25, deadline=None)
@given(
    n_samples=st.integers(2, 12),
    n_dims=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    t=st.floats(0.1, 5.0),
)
def test_uniformity_within_documented_range(n_samples, n_dims, seed, t):
    embeddings = _embeddings(n_samples, n_dims, seed=seed)

    value = functional.uniformity(embeddings, t=t).item()

    assert -4 * t - 1e-5 <= value <= 1e-6


@settings(max_examples=25, deadline=None)
@given(n_samples=st.integers(2, 12), n_dims=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_effective_rank_within_documented_range(n_samples, n_dims, seed):
    value = effective_rank(_embeddings(n_samples, n_dims, seed=seed)).item()

    assert 1 - 1e-4 <= value <= min(n_samples, n_dims) + 1e-4


def test_effective_rank_of_orthogonal_and_rank_one_batches():
    orthogonal = torch.eye(8)
    rank_one = torch.outer(torch.arange(1.0, 9.0), torch.ones(8))

    assert effective_rank(orthogonal).item() == pytest.approx(8.0, rel=1e-5)
    assert effective_rank(rank_one).item() == pytest.approx(1.0, rel=1e-4)


def test_effective_rank_loss_falls_as_rank_rises():
    collapsed = torch.outer(torch.randn(16), torch.ones(8)) + 0.01 * _embeddings()

    assert EffectiveRankLoss()(_embeddings()) < EffectiveRankLoss()(collapsed)


def test_barlow_twins_single_view_counts_constant_dimensions():
    embeddings = _embeddings()
    embeddings[:, :3] = 1.5

    loss = BarlowTwinsLoss(off_diagonal_weight=0.0)(embeddings)

    assert loss.item() == pytest.approx(3.0, abs=1e-3)


def test_variance_zero_above_gamma_and_max_when_collapsed():
    spread = _embeddings() * 5
    collapsed = torch.ones(16, 8)

    assert VarianceLoss()(spread).item() == 0.0
    assert VarianceLoss()(collapsed).item() == pytest.approx(1 - math.sqrt(1e-4), rel=1e-6)


def test_covariance_zero_for_uncorrelated_columns():
    # Rows of a Hadamard-like design: columns are centered and orthogonal.
    signs = torch.tensor([[1.0, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]])

    assert CovarianceLoss()(signs).item() == pytest.approx(0.0, abs=1e-7)


# Planted attractor and null control


def test_collapse_penalty_finds_planted_attractor():
    embeddings, members = _planted_attractor()
    penalty = CollapsePenalty()

    loss = penalty(embeddings, members)

    assert penalty.last_stats["acs"] > 100
    assert loss.item() == pytest.approx(math.log(penalty.last_stats["acs"]), rel=1e-5)


def test_collapse_penalty_null_control_near_one():
    embeddings = _embeddings(4000, 8, seed=3)
    members = torch.zeros(4000, dtype=torch.bool)
    members[::4] = True

    acs = functional.attractor_collapse_score(embeddings, members).item()

    assert acs == pytest.approx(1.0, abs=0.1)


def test_collapse_penalty_training_step_spreads_members():
    embeddings, members = _planted_attractor()
    embeddings.requires_grad_(True)
    optimizer = torch.optim.SGD([embeddings], lr=0.5)
    before = functional.attractor_collapse_score(embeddings, members).item()

    for _ in range(20):
        optimizer.zero_grad()
        CollapsePenalty()(embeddings, members).backward()
        optimizer.step()

    assert functional.attractor_collapse_score(embeddings, members).item() < before / 2


# gather_distributed without a process group


def test_gather_distributed_without_process_group_is_noop():
    embeddings = _embeddings().requires_grad_(True)
    labels = torch.arange(16) % 4

    assert not is_distributed()
    assert all_gather_rows(embeddings) is embeddings
    for loss_type, inputs in [(UniformityLoss, (embeddings,)), (SupConLoss, (embeddings, labels))]:
        plain = loss_type()(*inputs)
        gathered = loss_type(gather_distributed=True)(*inputs)
        assert torch.equal(plain, gathered)
