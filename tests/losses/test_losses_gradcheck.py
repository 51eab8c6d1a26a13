"""Analytic gradients against finite differences (torch.autograd.gradcheck, float64).

Inputs are chosen away from the kinks of the hinge losses (std = gamma,
ACS = 1), where the loss is not differentiable.
"""

import pytest
import torch
from torch.autograd import gradcheck

from losses import functional


def _embeddings(n_samples=6, n_dims=4, *, seed=0, scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(n_samples, n_dims, generator=generator, dtype=torch.float64) * scale
    return values.requires_grad_(True)


LABELS = torch.tensor([0, 1, 0, 1, 2, 2])
MEMBERS = torch.tensor([True, True, True, False, False, False])


def _collapsed_members():
    # Members close together, so log ACS > 0 and the hinge is differentiable.
    embeddings = _embeddings(seed=5).detach()
    embeddings[MEMBERS] = embeddings[MEMBERS][0] + 0.1 * embeddings[MEMBERS]
    return embeddings.requires_grad_(True)


# Each entry is (function of the differentiated inputs, inputs).
CASES = {
    "uniformity": (lambda x: functional.uniformity(x), (_embeddings(),)),
    "uniformity_t_0.5": (lambda x: functional.uniformity(x, t=0.5), (_embeddings(seed=1),)),
    "alignment": (functional.alignment, (_embeddings(seed=0), _embeddings(seed=1))),
    "alignment_alpha_1.5": (
        lambda a, b: functional.alignment(a, b, alpha=1.5),
        (_embeddings(seed=0), _embeddings(seed=1)),
    ),
    # A scale of 0.5 keeps every standard deviation below gamma = 1, inside the hinge.
    "variance": (functional.variance, (_embeddings(scale=0.5),)),
    "covariance": (functional.covariance, (_embeddings(),)),
    "vicreg": (functional.vicreg, (_embeddings(scale=0.5), _embeddings(seed=1, scale=0.5))),
    "barlow_twins": (functional.barlow_twins, (_embeddings(seed=0), _embeddings(seed=1))),
    "barlow_twins_single_view": (functional.barlow_twins, (_embeddings(seed=2),)),
    "supcon": (lambda x: functional.supcon(x, LABELS), (_embeddings(seed=3),)),
    "supcon_temperature_0.5": (
        lambda x: functional.supcon(x, LABELS, temperature=0.5),
        (_embeddings(seed=3),),
    ),
    "spectral_decoupling": (functional.spectral_decoupling, (_embeddings(),)),
    "effective_rank": (functional.effective_rank, (_embeddings(seed=4),)),
    "effective_rank_wide": (functional.effective_rank, (_embeddings(3, 7, seed=4),)),
    "collapse_penalty_hinge": (
        lambda x: functional.collapse_penalty(x, MEMBERS),
        (_collapsed_members(),),
    ),
    "collapse_penalty_squared": (
        lambda x: functional.collapse_penalty(x, MEMBERS, mode="squared"),
        (_embeddings(seed=6),),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_loss_gradient_matches_finite_differences(case):
    function, inputs = CASES[case]

    assert gradcheck(function, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)
