"""Alignment of positive pairs on the unit hypersphere (Wang and Isola, 2020)."""

from __future__ import annotations

import torch

from losses._base import RegularizerBase
from losses._checks import check_batch_size, check_embeddings, check_positive, check_same_shape
from losses._ops import normalize_rows


def alignment(
    view_a: torch.Tensor, view_b: torch.Tensor, *, alpha: float = 2.0, eps: float = 1e-12
) -> torch.Tensor:
    """Compute the alignment loss between two views of the same samples.

    See :class:`AlignmentLoss` for the formula, range and defaults.

    Parameters
    ----------
    view_a, view_b : torch.Tensor of shape (n_samples, n_dims)
        Row ``i`` of ``view_b`` is the positive of row ``i`` of ``view_a``.
    alpha : float, default=2.0
        Exponent on the distance, greater than 0.
    eps : float, default=1e-12
        Rows with an L2 norm at most ``eps`` are treated as the zero vector.

    Returns
    -------
    torch.Tensor
        Scalar in ``torch.promote_types(view_a.dtype, torch.float32)``.
    """
    return _alignment_terms(view_a, view_b, alpha=alpha, eps=eps)["loss"]


def _alignment_terms(
    view_a: torch.Tensor, view_b: torch.Tensor, *, alpha: float, eps: float
) -> dict[str, torch.Tensor]:
    check_positive("alpha", alpha)
    check_positive("eps", eps)
    view_a = check_embeddings(view_a, name="view_a")
    view_b = check_embeddings(view_b, name="view_b")
    check_same_shape(view_a, view_b, reference_name="view_a", other_name="view_b")
    check_batch_size(view_a.shape[0], minimum=1, owner="alignment", reason="(one pair)")

    difference = normalize_rows(view_a, eps=eps) - normalize_rows(view_b, eps=eps)
    squared = difference.pow(2).sum(dim=1)
    if alpha == 2:
        per_pair = squared
    else:
        # d^alpha = (d^2)^(alpha/2) has an infinite slope at d = 0 for alpha < 2,
        # so identical pairs take the value 0 with a zero gradient.
        is_zero = squared == 0
        safe = torch.where(is_zero, torch.ones_like(squared), squared)
        per_pair = torch.where(is_zero, torch.zeros_like(squared), safe.pow(alpha / 2))
    return {"loss": per_pair.mean()}


class AlignmentLoss(RegularizerBase):
    r"""Mean distance between L2-normalized positive pairs.

    .. math::

        \mathcal{L}_{\mathrm{align}} = \frac{1}{n} \sum_{i=1}^{n}
            \lVert z_i - z_i^{+} \rVert_2^{\alpha},
        \qquad z = x / \lVert x \rVert_2

    from Wang and Isola (2020), "Understanding Contrastive Representation
    Learning through Alignment and Uniformity on the Hypersphere".

    Lower is better. The value lies in ``[0, 2^alpha]``: 0 means every pair
    maps to the same point, ``2^alpha`` means every pair sits at opposite
    poles. Alignment alone is minimized by collapse, so pair it with
    :class:`UniformityLoss`.

    Parameters
    ----------
    alpha : float, default=2.0
        Exponent on the Euclidean distance, greater than 0.
    eps : float, default=1e-12
        Rows whose L2 norm is at most ``eps`` are mapped to the zero vector
        with a zero gradient.
    gather_distributed : bool, default=False
        Compute the mean over the pairs of every process (see
        :mod:`losses.distributed`). The value is then the mean over the
        concatenated batch. Has no effect when ``torch.distributed`` is not
        initialized.

    Attributes
    ----------
    last_stats : dict of str to float
        ``"loss"`` from the latest call.

    Notes
    -----
    For ``alpha != 2``, a pair with zero distance gets a zero gradient,
    because the exact gradient of ``d^alpha`` is infinite there for
    ``alpha < 1``. Half-precision inputs are computed and returned in float32.
    """

    def __init__(
        self, *, alpha: float = 2.0, eps: float = 1e-12, gather_distributed: bool = False
    ):
        super().__init__(gather_distributed=gather_distributed)
        check_positive("alpha", alpha)
        check_positive("eps", eps)
        self.alpha = alpha
        self.eps = eps

    def forward(self, view_a: torch.Tensor, view_b: torch.Tensor) -> torch.Tensor:
        """Return the alignment loss of the row pairs of ``view_a`` and ``view_b``."""
        view_a = check_embeddings(view_a, name="view_a")
        view_b = check_embeddings(view_b, name="view_b")
        check_same_shape(view_a, view_b, reference_name="view_a", other_name="view_b")
        view_a, view_b = self._gather(view_a, view_b)
        return self._record(_alignment_terms(view_a, view_b, alpha=self.alpha, eps=self.eps))

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, eps={self.eps}, gather_distributed={self.gather_distributed}"
