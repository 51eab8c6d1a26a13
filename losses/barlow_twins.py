"""Barlow Twins redundancy reduction (Zbontar et al., 2021), for two views or one."""

from __future__ import annotations

import torch

from losses._base import RegularizerBase
from losses._checks import (
    check_batch_size,
    check_embeddings,
    check_non_negative,
    check_positive,
    check_same_shape,
)
from losses._ops import off_diagonal


def barlow_twins(
    view_a: torch.Tensor,
    view_b: torch.Tensor | None = None,
    *,
    off_diagonal_weight: float = 5e-3,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Compute the Barlow Twins loss of two views, or the decorrelation loss of one batch.

    See :class:`BarlowTwinsLoss` for the formula, range and defaults.

    Parameters
    ----------
    view_a : torch.Tensor of shape (n_samples, n_dims)
        Any float dtype; n_samples >= 2.
    view_b : torch.Tensor of shape (n_samples, n_dims), optional
        Second view of the same samples. Without it, ``view_a`` is correlated
        with itself.
    off_diagonal_weight : float, default=5e-3
        Weight ``lambda`` of the off-diagonal term, >= 0.
    eps : float, default=1e-5
        Added to the variance when standardizing each dimension, greater than 0.

    Returns
    -------
    torch.Tensor
        Scalar in ``torch.promote_types(view_a.dtype, torch.float32)``.
    """
    return _barlow_twins_terms(
        view_a, view_b, off_diagonal_weight=off_diagonal_weight, eps=eps
    )["loss"]


def _standardize(embeddings: torch.Tensor, *, eps: float) -> torch.Tensor:
    # Biased variance, as batch normalization without affine parameters uses in training.
    centered = embeddings - embeddings.mean(dim=0)
    return centered / torch.sqrt(centered.pow(2).mean(dim=0) + eps)


def _barlow_twins_terms(
    view_a: torch.Tensor,
    view_b: torch.Tensor | None,
    *,
    off_diagonal_weight: float,
    eps: float,
) -> dict[str, torch.Tensor]:
    check_non_negative("off_diagonal_weight", off_diagonal_weight)
    check_positive("eps", eps)
    view_a = check_embeddings(view_a, name="view_a")
    if view_b is not None:
        view_b = check_embeddings(view_b, name="view_b")
        check_same_shape(view_a, view_b, reference_name="view_a", other_name="view_b")
    check_batch_size(
        view_a.shape[0],
        minimum=2,
        owner="Barlow Twins",
        reason="to standardize each dimension over the batch",
    )

    standardized_a = _standardize(view_a, eps=eps)
    standardized_b = standardized_a if view_b is None else _standardize(view_b, eps=eps)
    correlation = standardized_a.T @ standardized_b / view_a.shape[0]

    on_diagonal = (1 - correlation.diagonal()).pow(2).sum()
    off_diagonal_sum = off_diagonal(correlation).pow(2).sum()
    loss = on_diagonal + off_diagonal_weight * off_diagonal_sum
    return {"loss": loss, "on_diagonal": on_diagonal, "off_diagonal": off_diagonal_sum}


class BarlowTwinsLoss(RegularizerBase):
    r"""Redundancy reduction on the cross-correlation of standardized views (Barlow Twins).

    .. math::

        \mathcal{L} = \sum_{j} (1 - C_{jj})^2
            + \lambda \sum_{j \neq k} C_{jk}^2, \qquad
        C = \frac{1}{n} \hat Z^\top \hat Z'

    where ``Z-hat`` and ``Z'-hat`` are the views standardized per dimension
    over the batch (mean 0, biased variance 1), from Zbontar, Jing, Misra,
    LeCun and Deny (2021), "Barlow Twins: Self-Supervised Learning via
    Redundancy Reduction". The default ``lambda = 5e-3`` is the paper's.

    Called with a single batch, ``C`` is the auto-correlation of that batch
    and the loss is a pure decorrelation regularizer. The diagonal is then 1
    up to ``eps`` for every dimension that varies, so the first sum counts
    only the dimensions that are constant over the batch.

    Lower is better. The value is at least 0. Its maximum without the
    off-diagonal term is ``4 d`` for two views and ``d`` for one view, and
    the off-diagonal sum is at most ``d (d - 1)``.

    Parameters
    ----------
    off_diagonal_weight : float, default=5e-3
        Weight ``lambda`` of the off-diagonal term, >= 0.
    eps : float, default=1e-5
        Added to the variance when standardizing, so constant dimensions give
        finite values and gradients.
    gather_distributed : bool, default=False
        Standardize and correlate over the rows of every process (see
        :mod:`losses.distributed`). Has no effect when ``torch.distributed``
        is not initialized.

    Attributes
    ----------
    last_stats : dict of str to float
        ``"loss"``, ``"on_diagonal"`` and the unweighted ``"off_diagonal"``
        sum from the latest call.

    Notes
    -----
    Needs at least 2 rows after gathering. Half-precision inputs are
    computed and returned in float32.
    """

    def __init__(
        self,
        *,
        off_diagonal_weight: float = 5e-3,
        eps: float = 1e-5,
        gather_distributed: bool = False,
    ):
        super().__init__(gather_distributed=gather_distributed)
        check_non_negative("off_diagonal_weight", off_diagonal_weight)
        check_positive("eps", eps)
        self.off_diagonal_weight = off_diagonal_weight
        self.eps = eps

    def forward(self, view_a: torch.Tensor, view_b: torch.Tensor | None = None) -> torch.Tensor:
        """Return the loss of two views, or of ``view_a`` alone when ``view_b`` is None."""
        view_a = check_embeddings(view_a, name="view_a")
        if view_b is None:
            (view_a,) = self._gather(view_a)
        else:
            view_b = check_embeddings(view_b, name="view_b")
            check_same_shape(view_a, view_b, reference_name="view_a", other_name="view_b")
            view_a, view_b = self._gather(view_a, view_b)
        terms = _barlow_twins_terms(
            view_a, view_b, off_diagonal_weight=self.off_diagonal_weight, eps=self.eps
        )
        return self._record(terms)

    def extra_repr(self) -> str:
        return (
            f"off_diagonal_weight={self.off_diagonal_weight}, eps={self.eps}, "
            f"gather_distributed={self.gather_distributed}"
        )
