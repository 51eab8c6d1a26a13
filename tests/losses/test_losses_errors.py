"""Invalid inputs and hyper-parameters raise ValueError with the value received and the fix."""

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


def _labels(n_samples):
    return torch.zeros(n_samples, dtype=torch.long)


def _members(n_samples):
    return torch.ones(n_samples, dtype=torch.bool)


# Each entry calls a loss on embeddings of any shape, adding what else it needs.
LOSS_CALLS = {
    "uniformity": lambda x: UniformityLoss()(x),
    "alignment": lambda x: AlignmentLoss()(x, x),
    "variance": lambda x: VarianceLoss()(x),
    "covariance": lambda x: CovarianceLoss()(x),
    "vicreg": lambda x: VICRegLoss()(x, x),
    "barlow_twins": lambda x: BarlowTwinsLoss()(x, x),
    "barlow_twins_single_view": lambda x: BarlowTwinsLoss()(x),
    "supcon": lambda x: SupConLoss()(x, _labels(x.shape[0] if x.ndim else 1)),
    "spectral_decoupling": lambda x: SpectralDecouplingLoss()(x),
    "effective_rank": lambda x: EffectiveRankLoss()(x),
    "collapse_penalty": lambda x: CollapsePenalty()(x, _members(x.shape[0] if x.ndim else 1)),
}

# Smallest batch each loss accepts; one row fewer must raise.
MIN_BATCH = {
    "uniformity": 2,
    "alignment": 1,
    "variance": 2,
    "covariance": 2,
    "vicreg": 2,
    "barlow_twins": 2,
    "barlow_twins_single_view": 2,
    "supcon": 2,
    "spectral_decoupling": 1,
    "effective_rank": 2,
    "collapse_penalty": 2,
}


@pytest.mark.parametrize("shape", [(8,), (8, 3, 2), ()])
@pytest.mark.parametrize("loss_name", sorted(LOSS_CALLS))
def test_loss_rejects_wrong_rank(loss_name, shape):
    embeddings = torch.randn(shape)
    got = str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")

    with pytest.raises(ValueError, match=rf"shape \(n_samples, n_dims\), got shape {got}"):
        LOSS_CALLS[loss_name](embeddings)


@pytest.mark.parametrize("loss_name", sorted(LOSS_CALLS))
def test_loss_rejects_batch_below_minimum(loss_name):
    minimum = MIN_BATCH[loss_name]
    embeddings = torch.randn(minimum - 1, 4)

    with pytest.raises(ValueError, match=rf"at least {minimum} samples .*got a batch of {minimum - 1}"):
        LOSS_CALLS[loss_name](embeddings)


@pytest.mark.parametrize("loss_name", sorted(LOSS_CALLS))
def test_loss_accepts_minimum_batch(loss_name):
    embeddings = torch.randn(MIN_BATCH[loss_name], 4)

    assert torch.isfinite(LOSS_CALLS[loss_name](embeddings))


@pytest.mark.parametrize("loss_name", sorted(LOSS_CALLS))
def test_loss_rejects_integer_embeddings(loss_name):
    with pytest.raises(ValueError, match=r"floating-point tensor, got dtype torch.int64"):
        LOSS_CALLS[loss_name](torch.ones(4, 3, dtype=torch.long))


@pytest.mark.parametrize("loss_name", sorted(LOSS_CALLS))
def test_loss_rejects_zero_columns(loss_name):
    with pytest.raises(ValueError, match=r"at least one column, got shape \(4, 0\)"):
        LOSS_CALLS[loss_name](torch.ones(4, 0))


def test_loss_rejects_non_tensor():
    with pytest.raises(TypeError, match="embeddings must be a torch.Tensor, got list"):
        UniformityLoss()([[1.0, 2.0], [3.0, 4.0]])


@pytest.mark.parametrize(
    "two_view_loss",
    [AlignmentLoss(), VICRegLoss(), BarlowTwinsLoss()],
    ids=lambda loss: type(loss).__name__,
)
def test_two_view_loss_rejects_shape_mismatch(two_view_loss):
    with pytest.raises(
        ValueError, match=r"view_b must have the same shape as view_a, \(8, 4\), got shape \(8, 5\)"
    ):
        two_view_loss(torch.randn(8, 4), torch.randn(8, 5))


def test_vicreg_rejects_wrong_rank_view_b():
    with pytest.raises(ValueError, match=r"view_b must have shape \(n_samples, n_dims\)"):
        VICRegLoss()(torch.randn(8, 4), torch.randn(8, 4, 1))


def test_supcon_rejects_label_shape():
    with pytest.raises(ValueError, match=r"labels must have shape \(n_samples,\) = \(8,\).*got shape \(8, 1\)"):
        SupConLoss()(torch.randn(8, 4), torch.zeros(8, 1, dtype=torch.long))


def test_supcon_rejects_label_count():
    with pytest.raises(ValueError, match=r"= \(8,\) to match the embeddings, got shape \(7,\)"):
        SupConLoss()(torch.randn(8, 4), torch.zeros(7, dtype=torch.long))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_supcon_rejects_non_integer_labels(dtype):
    with pytest.raises(ValueError, match=rf"labels must be an integer tensor, got dtype {dtype}"):
        SupConLoss()(torch.randn(8, 4), torch.zeros(8, dtype=dtype))


def test_collapse_penalty_rejects_non_boolean_mask():
    with pytest.raises(ValueError, match=r"member_mask must be a boolean tensor, got dtype torch.int64"):
        CollapsePenalty()(torch.randn(8, 4), torch.ones(8, dtype=torch.long))


def test_collapse_penalty_rejects_mask_shape():
    with pytest.raises(ValueError, match=r"member_mask must have shape \(n_samples,\) = \(8,\).*got shape \(6,\)"):
        CollapsePenalty()(torch.randn(8, 4), torch.ones(6, dtype=torch.bool))


@pytest.mark.parametrize("n_members", [0, 1])
def test_collapse_penalty_rejects_fewer_than_two_members(n_members):
    mask = torch.zeros(8, dtype=torch.bool)
    mask[:n_members] = True

    with pytest.raises(ValueError, match=rf"at least 2 members .*got {n_members} of 8 rows"):
        CollapsePenalty()(torch.randn(8, 4), mask)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: UniformityLoss(t=0), r"t must be a finite number greater than 0, got 0"),
        (lambda: UniformityLoss(eps=-1e-3), r"eps must be a finite number greater than 0"),
        (lambda: AlignmentLoss(alpha=float("nan")), r"alpha must be a finite number greater than 0, got nan"),
        (lambda: VarianceLoss(gamma=-1.0), r"gamma must be a finite number greater than 0"),
        (lambda: VICRegLoss(invariance_weight=-1.0), r"invariance_weight must be a finite number >= 0"),
        (lambda: VICRegLoss(covariance_weight=float("inf")), r"covariance_weight must be a finite number >= 0"),
        (lambda: BarlowTwinsLoss(off_diagonal_weight=-5e-3), r"off_diagonal_weight must be a finite number >= 0"),
        (lambda: SupConLoss(temperature=0.0), r"temperature must be a finite number greater than 0"),
        (lambda: SupConLoss(temperature="0.1"), r"temperature must be a finite number greater than 0, got '0.1'"),
        (lambda: SpectralDecouplingLoss(weight=-0.1), r"weight must be a finite number >= 0"),
        (lambda: SpectralDecouplingLoss(warmup_steps=-1), r"warmup_steps must be an integer >= 0, got -1"),
        (lambda: SpectralDecouplingLoss(warmup_steps=2.5), r"warmup_steps must be an integer >= 0, got 2.5"),
        (lambda: EffectiveRankLoss(normalize="yes"), r"normalize must be a bool, got 'yes'"),
        (lambda: CollapsePenalty(mode="soft"), r"mode must be one of 'hinge', 'squared', got 'soft'"),
        (lambda: UniformityLoss(gather_distributed=1), r"gather_distributed must be a bool, got 1"),
    ],
)
def test_module_rejects_invalid_hyperparameter(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda x: functional.uniformity(x, t=-2.0), r"t must be a finite number greater than 0"),
        (lambda x: functional.supcon(x, _labels(8), temperature=-0.1), r"temperature must be"),
        (lambda x: functional.collapse_penalty(x, _members(8), mode="abs"), r"mode must be one of"),
        (lambda x: functional.effective_rank(x, eps=0.0), r"eps must be a finite number greater than 0"),
    ],
)
def test_functional_rejects_invalid_hyperparameter(call, message):
    with pytest.raises(ValueError, match=message):
        call(torch.randn(8, 4))


def test_spectral_decoupling_rejects_negative_step():
    with pytest.raises(ValueError, match=r"step must be an integer >= 0, got -3"):
        SpectralDecouplingLoss()(torch.randn(4, 3), step=-3)
