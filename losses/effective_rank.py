"""Effective rank of a batch of embeddings (RankMe, Garrido et al., 2023) and its loss."""

from __future__ import annotations

import torch

from losses._base import RegularizerBase
from losses._checks import check_batch_size, check_embeddings, check_positive


def effective_rank(embeddings: torch.Tensor, *, eps: float = 1e-7) -> torch.Tensor:
    """Compute the effective rank of a batch of embeddings, a differentiable scalar.

    See :class:`EffectiveRankLoss` for the formula and range.

    Parameters
    ----------
    embeddings : torch.Tensor of shape (n_samples, n_dims)
        Any float dtype; n_samples >= 2. Not centered.
    eps : float, default=1e-7
        Added to every normalized singular value before the logarithm.

    Returns
    -------
    torch.Tensor
        Scalar in ``torch.promote_types(embeddings.dtype, torch.float32)``,
        about ``[1, min(n_samples, n_dims)]``. Higher means less collapse.
    """
    return _effective_rank_terms(embeddings, eps=eps, normalize=False)["effective_rank"]


def effective_rank_loss(
    embeddings: torch.Tensor, *, eps: float = 1e-7, normalize: bool = True
) -> torch.Tensor:
    """Compute the negative effective rank, divided by ``min(n_samples, n_dims)`` if ``normalize``.

    See :class:`EffectiveRankLoss` for the formula and range.
    """
    return _effective_rank_terms(embeddings, eps=eps, normalize=normalize)["loss"]


def _effective_rank_terms(
    embeddings: torch.Tensor, *, eps: float, normalize: bool
) -> dict[str, torch.Tensor]:
    check_positive("eps", eps)
    embeddings = check_embeddings(embeddings)
    check_batch_size(
        embeddings.shape[0],
        minimum=2,
        owner="effective rank",
        reason="because one row has rank 1 whatever its values",
    )

    # svdvals gives gradients through U diag(grad) V^T only, which stay finite
    # for repeated and zero singular values, unlike gradients through U and V.
    singular_values = torch.linalg.svdvals(embeddings)

    # An all-zero batch has no direction: divide by 1 there, so p = eps and the gradient stays finite.
    total = singular_values.sum()
    safe_total = torch.where(total > 0, total, torch.ones_like(total))
    probabilities = singular_values / safe_total + eps
    entropy = -(probabilities * probabilities.log()).sum()
    rank = entropy.exp()

    loss = -rank / min(embeddings.shape) if normalize else -rank
    return {"loss": loss, "effective_rank": rank}


class EffectiveRankLoss(RegularizerBase):
    r"""Negative effective rank of a batch, so that minimizing it raises the rank.

    .. math::

        \mathrm{erank}(Z) = \exp\Big(-\sum_k p_k \log p_k\Big), \qquad
        p_k = \frac{\sigma_k}{\sum_j \sigma_j} + \epsilon

    where ``sigma_k`` are the singular values of the (uncentered) batch, as in
    RankMe by Garrido, Balestriero, Najman and LeCun (2023), "RankMe:
    Assessing the Downstream Performance of Pretrained Self-Supervised
    Representations by Their Rank". The loss is ``-erank / min(n, d)`` with
    ``normalize=True`` (the default) and ``-erank`` otherwise.

    Lower is better. ``erank`` lies in about ``[1, min(n, d)]`` (``eps``
    shifts both ends slightly), so the normalized loss lies in about
    ``[-1, -1 / min(n, d)]``. A value near ``-1 / min(n, d)`` means the batch
    spans one direction (full collapse).

    Parameters
    ----------
    eps : float, default=1e-7
        Added to every normalized singular value before the logarithm, so a
        zero singular value gives a finite gradient.
    normalize : bool, default=True
        Divide by ``min(n_samples, n_dims)`` so the loss does not depend on
        the batch size or width.
    gather_distributed : bool, default=False
        Compute the rank of the embeddings of every process together (see
        :mod:`losses.distributed`). Has no effect when ``torch.distributed``
        is not initialized.

    Attributes
    ----------
    last_stats : dict of str to float
        ``"loss"`` and ``"effective_rank"`` from the latest call.

    Notes
    -----
    The gradient comes from the singular values only. Identical rows, zero
    rows and an all-zero batch give finite gradients; for an all-zero batch
    the sum of singular values is replaced by 1. Needs at least 2 rows after
    gathering. Half-precision inputs are computed and returned in float32.
    """

    def __init__(self, *, eps: float = 1e-7, normalize: bool = True, gather_distributed: bool = False):
        super().__init__(gather_distributed=gather_distributed)
        check_positive("eps", eps)
        if not isinstance(normalize, bool):
            raise ValueError(f"normalize must be a bool, got {normalize!r}")
        self.eps = eps
        self.normalize = normalize

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Return the negative effective rank of ``embeddings``, shape (n_samples, n_dims)."""
        (embeddings,) = self._gather(check_embeddings(embeddings))
        terms = _effective_rank_terms(embeddings, eps=self.eps, normalize=self.normalize)
        return self._record(terms)

    def extra_repr(self) -> str:
        return (
            f"eps={self.eps}, normalize={self.normalize}, "
            f"gather_distributed={self.gather_distributed}"
        )
