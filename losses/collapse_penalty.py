"""Penalty on the Attractor Collapse Score of a found attractor's member set."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from losses._base import RegularizerBase
from losses._checks import (
    check_batch_size,
    check_choice,
    check_embeddings,
    check_member_mask,
    check_positive,
)
from losses._ops import total_variance

PENALTY_MODES = ("hinge", "squared")


def attractor_collapse_score(
    embeddings: torch.Tensor, member_mask: torch.Tensor, *, eps: float = 1e-8
) -> torch.Tensor:
    """Compute the differentiable Attractor Collapse Score (ACS) of a member set.

    See :class:`CollapsePenalty` for the formula and range.

    Parameters
    ----------
    embeddings : torch.Tensor of shape (n_samples, n_dims)
        Any float dtype.
    member_mask : torch.Tensor of shape (n_samples,), dtype bool
        True for the rows in the attractor's member set; at least 2.
    eps : float, default=1e-8
        Added to both traces, in squared embedding units.

    Returns
    -------
    torch.Tensor
        Scalar in ``torch.promote_types(embeddings.dtype, torch.float32)``.
        1 means the members are as spread as the whole batch; higher means
        collapsed.
    """
    return _collapse_terms(embeddings, member_mask, mode="hinge", eps=eps)["acs"]


def collapse_penalty(
    embeddings: torch.Tensor,
    member_mask: torch.Tensor,
    *,
    mode: str = "hinge",
    eps: float = 1e-8,
) -> torch.Tensor:
    """Compute the penalty on the log ACS of a member set.

    See :class:`CollapsePenalty` for the formula, modes and range.
    """
    return _collapse_terms(embeddings, member_mask, mode=mode, eps=eps)["loss"]


def _collapse_terms(
    embeddings: torch.Tensor, member_mask: torch.Tensor, *, mode: str, eps: float
) -> dict[str, torch.Tensor]:
    check_choice("mode", mode, PENALTY_MODES)
    check_positive("eps", eps)
    embeddings = check_embeddings(embeddings)
    member_mask = check_member_mask(member_mask, n_samples=embeddings.shape[0])
    check_batch_size(
        embeddings.shape[0], minimum=2, owner="CollapsePenalty", reason="to measure the spread"
    )
    n_members = int(member_mask.sum())
    if n_members < 2:
        raise ValueError(
            f"CollapsePenalty needs at least 2 members to measure their spread, "
            f"got {n_members} of {embeddings.shape[0]} rows; sample more members into the batch"
        )

    batch_trace = total_variance(embeddings)
    members_trace = total_variance(embeddings[member_mask])

    # eps on both traces keeps the log finite and makes identical embeddings score ACS = 1.
    log_acs = torch.log(batch_trace + eps) - torch.log(members_trace + eps)
    loss = F.relu(log_acs) if mode == "hinge" else log_acs.pow(2)
    return {
        "loss": loss,
        "acs": log_acs.exp(),
        "batch_trace": batch_trace,
        "members_trace": members_trace,
        "n_members": torch.tensor(float(n_members)),
    }


class CollapsePenalty(RegularizerBase):
    r"""Penalty that spreads out the member set of a found attractor.

    The Attractor Collapse Score of a member set ``S`` is the mean squared
    pairwise Euclidean distance over the batch divided by the same mean
    within ``S``, which equals a ratio of covariance traces:

    .. math::

        \mathrm{ACS}(S) = \frac{\operatorname{tr}\operatorname{Cov}(Z) + \epsilon}
            {\operatorname{tr}\operatorname{Cov}(Z_S) + \epsilon}, \qquad
        \mathcal{L} = \begin{cases}
            \max(0, \log \mathrm{ACS}) & \text{mode = "hinge"} \\
            (\log \mathrm{ACS})^2 & \text{mode = "squared"}
        \end{cases}

    Both covariances are normalized by the row count minus one, so each trace
    is half the mean squared distance over pairs ``i != j``. ACS = 1 means the
    members are as spread as the whole batch, and higher means they are
    collapsed into a narrow cluster.

    Lower is better. The penalty is at least 0 and is 0 at ACS = 1. The hinge
    mode is also 0 whenever ACS < 1, so it only pushes collapsed members
    apart. The squared mode pulls ACS toward 1 from both sides.

    Parameters
    ----------
    mode : {"hinge", "squared"}, default="hinge"
        Shape of the penalty on ``log ACS``.
    eps : float, default=1e-8
        Added to both traces, in squared embedding units, so a member set
        collapsed to one point gives a finite value and gradient.
    gather_distributed : bool, default=False
        Gather embeddings and the member mask from every process and score
        the global batch (see :mod:`losses.distributed`). Has no effect when
        ``torch.distributed`` is not initialized.

    Attributes
    ----------
    last_stats : dict of str to float
        ``"loss"``, ``"acs"``, ``"batch_trace"``, ``"members_trace"`` and
        ``"n_members"`` from the latest call.

    Notes
    -----
    Needs at least 2 members (after gathering); fewer raises ``ValueError``.
    Because ``eps`` is absolute, embeddings on a scale near ``sqrt(eps)``
    are scored closer to 1 than their true ACS. Half-precision inputs are
    computed and returned in float32.
    """

    def __init__(self, *, mode: str = "hinge", eps: float = 1e-8, gather_distributed: bool = False):
        super().__init__(gather_distributed=gather_distributed)
        check_choice("mode", mode, PENALTY_MODES)
        check_positive("eps", eps)
        self.mode = mode
        self.eps = eps

    def forward(self, embeddings: torch.Tensor, member_mask: torch.Tensor) -> torch.Tensor:
        """Return the penalty for ``embeddings`` (n_samples, n_dims) and ``member_mask`` (n_samples,)."""
        embeddings = check_embeddings(embeddings)
        member_mask = check_member_mask(member_mask, n_samples=embeddings.shape[0])
        embeddings, member_mask = self._gather(embeddings, member_mask)
        return self._record(_collapse_terms(embeddings, member_mask, mode=self.mode, eps=self.eps))

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, eps={self.eps}, gather_distributed={self.gather_distributed}"
