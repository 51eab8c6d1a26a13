"""VICReg terms (Bardes, Ponce and LeCun, 2022): variance, covariance and the two-view loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from losses._base import RegularizerBase
from losses._checks import (
    check_batch_size,
    check_embeddings,
    check_non_negative,
    check_positive,
    check_same_shape,
)
from losses._ops import column_covariance, off_diagonal

_MIN_BATCH_REASON = "because the per-dimension variance is normalized by n_samples - 1"


def variance(embeddings: torch.Tensor, *, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """Compute the VICReg variance hinge of one batch.

    See :class:`VarianceLoss` for the formula, range and defaults.

    Parameters
    ----------
    embeddings : torch.Tensor of shape (n_samples, n_dims)
        Any float dtype; n_samples >= 2.
    gamma : float, default=1.0
        Target standard deviation per dimension, greater than 0.
    eps : float, default=1e-4
        Added to the variance before the square root, greater than 0.

    Returns
    -------
    torch.Tensor
        Scalar in ``torch.promote_types(embeddings.dtype, torch.float32)``.
    """
    return _variance_terms(embeddings, gamma=gamma, eps=eps)["loss"]


def covariance(embeddings: torch.Tensor) -> torch.Tensor:
    """Compute the VICReg covariance term of one batch.

    See :class:`CovarianceLoss` for the formula and range.

    Parameters
    ----------
    embeddings : torch.Tensor of shape (n_samples, n_dims)
        Any float dtype; n_samples >= 2.

    Returns
    -------
    torch.Tensor
        Scalar in ``torch.promote_types(embeddings.dtype, torch.float32)``.
    """
    return _covariance_terms(embeddings)["loss"]


def vicreg(
    view_a: torch.Tensor,
    view_b: torch.Tensor,
    *,
    invariance_weight: float = 25.0,
    variance_weight: float = 25.0,
    covariance_weight: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
) -> torch.Tensor:
    """Compute the two-view VICReg loss.

    See :class:`VICRegLoss` for the formula, range and defaults.

    Parameters
    ----------
    view_a, view_b : torch.Tensor of shape (n_samples, n_dims)
        Row ``i`` of ``view_b`` is a second view of row ``i`` of ``view_a``;
        n_samples >= 2.
    invariance_weight, variance_weight, covariance_weight : float
        Weights of the three terms, each >= 0.
    gamma, eps : float
        Passed to the variance term of each view.

    Returns
    -------
    torch.Tensor
        Scalar in ``torch.promote_types(view_a.dtype, torch.float32)``.
    """
    return _vicreg_terms(
        view_a,
        view_b,
        invariance_weight=invariance_weight,
        variance_weight=variance_weight,
        covariance_weight=covariance_weight,
        gamma=gamma,
        eps=eps,
    )["loss"]


def _variance_terms(embeddings: torch.Tensor, *, gamma: float, eps: float) -> dict[str, torch.Tensor]:
    check_positive("gamma", gamma)
    check_positive("eps", eps)
    embeddings = check_embeddings(embeddings)
    check_batch_size(embeddings.shape[0], minimum=2, owner="variance", reason=_MIN_BATCH_REASON)

    std = torch.sqrt(embeddings.var(dim=0) + eps)
    loss = F.relu(gamma - std).mean()
    return {"loss": loss, "mean_std": std.mean(), "min_std": std.min()}


def _covariance_terms(embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
    embeddings = check_embeddings(embeddings)
    check_batch_size(embeddings.shape[0], minimum=2, owner="covariance", reason=_MIN_BATCH_REASON)

    # Index the off-diagonal entries instead of subtracting the diagonal from the
    # total, which cancels catastrophically when the variances are large.
    covariances = off_diagonal(column_covariance(embeddings))
    loss = covariances.pow(2).sum() / embeddings.shape[1]
    return {"loss": loss}


def _vicreg_terms(
    view_a: torch.Tensor,
    view_b: torch.Tensor,
    *,
    invariance_weight: float,
    variance_weight: float,
    covariance_weight: float,
    gamma: float,
    eps: float,
) -> dict[str, torch.Tensor]:
    for name, weight in (
        ("invariance_weight", invariance_weight),
        ("variance_weight", variance_weight),
        ("covariance_weight", covariance_weight),
    ):
        check_non_negative(name, weight)
    view_a = check_embeddings(view_a, name="view_a")
    view_b = check_embeddings(view_b, name="view_b")
    check_same_shape(view_a, view_b, reference_name="view_a", other_name="view_b")
    check_batch_size(view_a.shape[0], minimum=2, owner="VICReg", reason=_MIN_BATCH_REASON)

    invariance = F.mse_loss(view_a, view_b)
    variance_sum = (
        _variance_terms(view_a, gamma=gamma, eps=eps)["loss"]
        + _variance_terms(view_b, gamma=gamma, eps=eps)["loss"]
    )
    covariance_sum = _covariance_terms(view_a)["loss"] + _covariance_terms(view_b)["loss"]

    loss = (
        invariance_weight * invariance
        + variance_weight * variance_sum
        + covariance_weight * covariance_sum
    )
    return {
        "loss": loss,
        "invariance": invariance,
        "variance": variance_sum,
        "covariance": covariance_sum,
    }


class VarianceLoss(RegularizerBase):
    r"""Hinge on the standard deviation of every embedding dimension (VICReg variance term).

    .. math::

        v(Z) = \frac{1}{d} \sum_{j=1}^{d}
            \max\left(0, \gamma - \sqrt{\mathrm{Var}(z_{\cdot j}) + \epsilon}\right)

    with the unbiased variance over the batch, from Bardes, Ponce and LeCun
    (2022), "VICReg: Variance-Invariance-Covariance Regularization for
    Self-Supervised Learning". It works on a single batch and needs no
    second view.

    Lower is better. The value lies in ``[0, gamma - sqrt(eps)]``: 0 means
    every dimension has a standard deviation of at least ``gamma``, and the
    maximum means every embedding is identical (full collapse).

    Parameters
    ----------
    gamma : float, default=1.0
        Target standard deviation per dimension, greater than 0.
    eps : float, default=1e-4
        Added to the variance before the square root, so identical embeddings
        give a finite gradient.
    gather_distributed : bool, default=False
        Compute the variance over the embeddings of every process (see
        :mod:`losses.distributed`). Has no effect when ``torch.distributed``
        is not initialized.

    Attributes
    ----------
    last_stats : dict of str to float
        ``"loss"``, ``"mean_std"`` and ``"min_std"`` (mean and minimum over
        dimensions of the regularized standard deviation) from the latest call.

    Notes
    -----
    Needs at least 2 rows after gathering. Half-precision inputs are
    computed and returned in float32.
    """

    def __init__(self, *, gamma: float = 1.0, eps: float = 1e-4, gather_distributed: bool = False):
        super().__init__(gather_distributed=gather_distributed)
        check_positive("gamma", gamma)
        check_positive("eps", eps)
        self.gamma = gamma
        self.eps = eps

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Return the variance hinge of ``embeddings``, shape (n_samples, n_dims)."""
        (embeddings,) = self._gather(check_embeddings(embeddings))
        return self._record(_variance_terms(embeddings, gamma=self.gamma, eps=self.eps))

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, eps={self.eps}, gather_distributed={self.gather_distributed}"


class CovarianceLoss(RegularizerBase):
    r"""Sum of squared off-diagonal covariances over the dimension count (VICReg covariance term).

    .. math::

        c(Z) = \frac{1}{d} \sum_{j \neq k} C(Z)_{jk}^2, \qquad
        C(Z) = \frac{1}{n - 1} \sum_{i=1}^{n} (z_i - \bar z)(z_i - \bar z)^\top

    from Bardes, Ponce and LeCun (2022), "VICReg: Variance-Invariance-Covariance
    Regularization for Self-Supervised Learning". It works on a single batch
    and needs no second view.

    Lower is better. The value is at least 0, with 0 when the dimensions are
    uncorrelated over the batch. It has no upper bound and grows with the
    fourth power of the embedding scale.

    Parameters
    ----------
    gather_distributed : bool, default=False
        Compute the covariance over the embeddings of every process (see
        :mod:`losses.distributed`). Has no effect when ``torch.distributed``
        is not initialized.

    Attributes
    ----------
    last_stats : dict of str to float
        ``"loss"`` from the latest call.

    Notes
    -----
    Needs at least 2 rows after gathering. Half-precision inputs are
    computed and returned in float32, so the value stays finite. The
    gradient, however, grows with the cube of the embedding scale and is
    cast back to the input dtype. For float16 embeddings with norms near 1e4
    it exceeds the float16 maximum (65504) and becomes inf, and
    mixed-precision training with ``torch.amp.GradScaler`` skips such steps. Normalize or scale down
    large embeddings, or use :class:`BarlowTwinsLoss`, which is
    scale-invariant.
    """

    def __init__(self, *, gather_distributed: bool = False):
        super().__init__(gather_distributed=gather_distributed)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Return the covariance term of ``embeddings``, shape (n_samples, n_dims)."""
        (embeddings,) = self._gather(check_embeddings(embeddings))
        return self._record(_covariance_terms(embeddings))

    def extra_repr(self) -> str:
        return f"gather_distributed={self.gather_distributed}"


class VICRegLoss(RegularizerBase):
    r"""Two-view VICReg loss: invariance, variance and covariance.

    .. math::

        \ell(Z, Z') = \lambda\, s(Z, Z') + \mu \left[v(Z) + v(Z')\right]
            + \nu \left[c(Z) + c(Z')\right]

    where ``s`` is the mean squared error over all entries, ``v`` is
    :class:`VarianceLoss` and ``c`` is :class:`CovarianceLoss`, from Bardes,
    Ponce and LeCun (2022), "VICReg: Variance-Invariance-Covariance
    Regularization for Self-Supervised Learning". The defaults
    ``lambda = mu = 25`` and ``nu = 1`` are the paper's.

    Lower is better. The value is at least 0 and has no upper bound.

    Parameters
    ----------
    invariance_weight : float, default=25.0
        Weight ``lambda`` of the mean squared error between the views.
    variance_weight : float, default=25.0
        Weight ``mu`` of the variance hinge, applied to each view.
    covariance_weight : float, default=1.0
        Weight ``nu`` of the covariance term, applied to each view.
    gamma : float, default=1.0
        Target standard deviation of the variance hinge.
    eps : float, default=1e-4
        Added to the variance before the square root.
    gather_distributed : bool, default=False
        Compute all terms over the rows of every process (see
        :mod:`losses.distributed`). Has no effect when ``torch.distributed``
        is not initialized.

    Attributes
    ----------
    last_stats : dict of str to float
        ``"loss"``, and the unweighted ``"invariance"``, ``"variance"`` (sum
        over both views) and ``"covariance"`` (sum over both views) from the
        latest call.

    Notes
    -----
    Both views need the same shape and at least 2 rows after gathering.
    Half-precision inputs are computed and returned in float32. The
    covariance term has the float16 gradient limit described in
    :class:`CovarianceLoss`.
    """

    def __init__(
        self,
        *,
        invariance_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        gamma: float = 1.0,
        eps: float = 1e-4,
        gather_distributed: bool = False,
    ):
        super().__init__(gather_distributed=gather_distributed)
        check_non_negative("invariance_weight", invariance_weight)
        check_non_negative("variance_weight", variance_weight)
        check_non_negative("covariance_weight", covariance_weight)
        check_positive("gamma", gamma)
        check_positive("eps", eps)
        self.invariance_weight = invariance_weight
        self.variance_weight = variance_weight
        self.covariance_weight = covariance_weight
        self.gamma = gamma
        self.eps = eps

    def forward(self, view_a: torch.Tensor, view_b: torch.Tensor) -> torch.Tensor:
        """Return the VICReg loss of two views, each of shape (n_samples, n_dims)."""
        view_a = check_embeddings(view_a, name="view_a")
        view_b = check_embeddings(view_b, name="view_b")
        check_same_shape(view_a, view_b, reference_name="view_a", other_name="view_b")
        view_a, view_b = self._gather(view_a, view_b)
        terms = _vicreg_terms(
            view_a,
            view_b,
            invariance_weight=self.invariance_weight,
            variance_weight=self.variance_weight,
            covariance_weight=self.covariance_weight,
            gamma=self.gamma,
            eps=self.eps,
        )
        return self._record(terms)

    def extra_repr(self) -> str:
        return (
            f"invariance_weight={self.invariance_weight}, variance_weight={self.variance_weight}, "
            f"covariance_weight={self.covariance_weight}, gamma={self.gamma}, eps={self.eps}, "
            f"gather_distributed={self.gather_distributed}"
        )
