"""Degenerate inputs: every loss returns a finite float32 value and finite gradients.

Covers identical embeddings, all-zero and partly zero batches, norms of 1e4,
a batch of two, and half-precision inputs, where a squared norm of 1e4 would
overflow float16 if the loss did not upcast first.
"""

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

N_DIMS = 6


def _second_view(embeddings):
    return embeddings.detach().flip(0).clone().requires_grad_(True)


def _labels(n_samples):
    # Pairs of equal labels, so every anchor has a positive even in a batch of two.
    return torch.arange(n_samples) // 2


def _members(n_samples):
    mask = torch.zeros(n_samples, dtype=torch.bool)
    mask[: max(2, n_samples // 2)] = True
    return mask


# Each entry builds the loss and calls it on the embeddings (and any extra inputs it needs).
LOSS_CALLS = {
    "uniformity": lambda x: UniformityLoss()(x),
    "alignment": lambda x: AlignmentLoss()(x, _second_view(x)),
    "alignment_alpha_half": lambda x: AlignmentLoss(alpha=0.5)(x, x),
    "variance": lambda x: VarianceLoss()(x),
    "covariance": lambda x: CovarianceLoss()(x),
    "vicreg": lambda x: VICRegLoss()(x, _second_view(x)),
    "barlow_twins": lambda x: BarlowTwinsLoss()(x, _second_view(x)),
    "barlow_twins_single_view": lambda x: BarlowTwinsLoss()(x),
    "supcon": lambda x: SupConLoss()(x, _labels(x.shape[0])),
    "supcon_temperature_0.01": lambda x: SupConLoss(temperature=0.01)(x, _labels(x.shape[0])),
    "spectral_decoupling": lambda x: SpectralDecouplingLoss()(x),
    "effective_rank": lambda x: EffectiveRankLoss()(x),
    "collapse_penalty": lambda x: CollapsePenalty()(x, _members(x.shape[0])),
    "collapse_penalty_squared": lambda x: CollapsePenalty(mode="squared")(x, _members(x.shape[0])),
}


def _identical(n_samples=8):
    return torch.ones(1, N_DIMS).repeat(n_samples, 1) * 0.7


def _zeros(n_samples=8):
    return torch.zeros(n_samples, N_DIMS)


def _one_zero_row(n_samples=8):
    embeddings = torch.randn(n_samples, N_DIMS, generator=torch.Generator().manual_seed(1))
    embeddings[3] = 0
    return embeddings


def _large_norms(n_samples=8):
    embeddings = torch.randn(n_samples, N_DIMS, generator=torch.Generator().manual_seed(2))
    return embeddings / embeddings.norm(dim=1, keepdim=True) * 1e4


def _batch_of_two(n_samples=2):
    return torch.randn(n_samples, N_DIMS, generator=torch.Generator().manual_seed(3))


def _identical_batch_of_two():
    return _identical(2)


INPUTS = {
    "identical": _identical,
    "zeros": _zeros,
    "one_zero_row": _one_zero_row,
    "large_norms": _large_norms,
    "batch_of_two": _batch_of_two,
    "identical_batch_of_two": _identical_batch_of_two,
}


# The covariance term scales with the fourth power of the norm, so at norms of 1e4 its
# true gradient (about 1e11) is beyond the float16 maximum of 65504. The loss itself
# stays finite because it is computed in float32; see the Notes of CovarianceLoss.
FLOAT16_GRADIENT_OVERFLOWS = {("covariance", "large_norms"), ("vicreg", "large_norms")}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("input_name", sorted(INPUTS))
@pytest.mark.parametrize("loss_name", sorted(LOSS_CALLS))
def test_loss_finite_on_degenerate_input(loss_name, input_name, dtype):
    embeddings = INPUTS[input_name]().to(dtype).requires_grad_(True)

    loss = LOSS_CALLS[loss_name](embeddings)
    loss.backward()

    assert loss.dtype == torch.float32
    assert torch.isfinite(loss), f"{loss_name} on {input_name} in {dtype} gave {loss.item()}"
    assert embeddings.grad is not None
    assert embeddings.grad.dtype == dtype
    if dtype == torch.float16 and (loss_name, input_name) in FLOAT16_GRADIENT_OVERFLOWS:
        assert torch.isinf(embeddings.grad).any(), "expected the documented float16 overflow"
        return
    assert torch.isfinite(embeddings.grad).all(), f"non-finite gradient: {embeddings.grad}"


@pytest.mark.parametrize("loss_name", sorted(LOSS_CALLS))
def test_loss_float64_stays_float64(loss_name):
    embeddings = _batch_of_two(6).double().requires_grad_(True)

    loss = LOSS_CALLS[loss_name](embeddings)
    loss.backward()

    assert loss.dtype == torch.float64
    assert embeddings.grad.dtype == torch.float64


def test_supcon_float16_temperature_001_is_finite_and_accurate():
    generator = torch.Generator().manual_seed(4)
    embeddings = (torch.randn(64, 16, generator=generator) * 30).half().requires_grad_(True)
    labels = torch.randint(0, 4, (64,), generator=generator)

    loss = SupConLoss(temperature=0.01)(embeddings, labels)
    loss.backward()
    reference = SupConLoss(temperature=0.01)(embeddings.detach().double(), labels)

    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)
    assert torch.isfinite(embeddings.grad).all()
    assert embeddings.grad.abs().sum() > 0
    assert loss.item() == pytest.approx(reference.item(), rel=1e-4)


def test_uniformity_identical_embeddings_score_zero():
    loss = UniformityLoss()(_identical())

    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_zero_row_gets_zero_gradient_from_normalization():
    embeddings = _one_zero_row().half().requires_grad_(True)

    UniformityLoss()(embeddings).backward()

    assert torch.equal(embeddings.grad[3], torch.zeros(N_DIMS, dtype=torch.float16))
    assert embeddings.grad[0].abs().sum() > 0


def test_effective_rank_repeated_singular_values_finite_gradient():
    # An orthogonal batch has every singular value equal, the worst case for SVD gradients.
    embeddings = torch.eye(N_DIMS).requires_grad_(True)

    loss = EffectiveRankLoss()(embeddings)
    loss.backward()

    assert loss.item() == pytest.approx(-1.0, abs=1e-5)
    assert torch.isfinite(embeddings.grad).all()


def test_collapse_penalty_identical_embeddings_score_acs_one():
    penalty = CollapsePenalty()

    penalty(_identical(), _members(8))

    assert penalty.last_stats["acs"] == pytest.approx(1.0, abs=1e-5)
    assert penalty.last_stats["loss"] == pytest.approx(0.0, abs=1e-5)
