"""Uniformity of embeddings on the unit hypersphere (Wang and Isola, 2020)."""

from __future__ import annotations

import math

import torch

from losses._base import RegularizerBase
from losses._checks import check_batch_size, check_embeddings, check_positive
from losses._ops import normalize_rows, squared_distances_upper


def uniformity(embeddings: torch.Tensor, *, t: float = 2.0, eps: float = 1e-12) -> torch.Tensor:
    """Compute the uniformity loss of a batch of embeddings.

    See :class:`UniformityLoss` for the formula, range and defaults.

    Parameters
    ----------
    embeddings : torch.Tensor of shape (n_samples, n_dims)
        Any float dtype; n_samples >= 2.
    t : float, default=2.0
        Scale of the Gaussian potential, greater than 0.
    eps : float, default=1e-12
        Rows with an L2 norm at most ``eps`` are treated as the zero vector.

    Returns
    -------
    torch.Tensor
        Scalar in ``torch.promote_types(embeddings.dtype, torch.float32)``.
    """
    return _uniformity_terms(embeddings, t=t, eps=eps)["loss"]


def _uniformity_terms(embeddings: torch.Tensor, *, t: float, eps: float) -> dict[str, torch.Tensor]:
    check_positive("t", t)
    check_positive("eps", eps)
    embeddings = check_embeddings(embeddings)
    check_batch_size(
        embeddings.shape[0], minimum=2, owner="uniformity", reason="to form one pair"
    )

    unit = normalize_rows(embeddings, eps=eps)
    distances = squared_distances_upper(unit)

    # log of the mean of exp(-t d) over pairs, via logsumexp so it cannot underflow.
    loss = torch.logsumexp(-t * distances, dim=0) - math.log(distances.numel())
    return {"loss": loss, "mean_squared_distance": distances.mean()}


class UniformityLoss(RegularizerBase):
    r"""Uniformity of L2-normalized embeddings on the hypersphere.

    .. math::

        \mathcal{L}_{\mathrm{uniform}} = \log \frac{1}{\binom{n}{2}}
            \sum_{i < j} \exp\left(-t \lVert z_i - z_j \rVert_2^2\right),
        \qquad z_i = x_i / \lVert x_i \rVert_2

    from Wang and Isola (2020), "Understanding Contrastive Representation
    Learning through Alignment and Uniformity on the Hypersphere". The mean
    over the pairs ``i < j`` is computed with ``logsumexp``.

    Lower is better. The value lies in ``[-4 t, 0]``: 0 means every embedding
    points the same way (full collapse), and values near ``-4 t`` need pairs
    at opposite poles. With the default ``t = 2`` the range is ``[-8, 0]``.

    Parameters
    ----------
    t : float, default=2.0
        Scale of the Gaussian potential, greater than 0.
    eps : float, default=1e-12
        Rows whose L2 norm is at most ``eps`` are mapped to the zero vector
        with a zero gradient, instead of being divided by ``eps``.
    gather_distributed : bool, default=False
        Compute the loss over the embeddings of every process, with gradients
        flowing back to each process. Before DDP's averaging, the gradient on
        the local embeddings is ``world_size`` times the matching slice of the
        single-process gradient. After it, parameter gradients equal those of
        one process on the concatenated batch (see :mod:`losses.distributed`).
        Has no effect when ``torch.distributed`` is not initialized.

    Attributes
    ----------
    last_stats : dict of str to float
        ``"loss"`` and ``"mean_squared_distance"`` (mean over pairs of the
        squared distance between normalized embeddings, in ``[0, 4]``) from
        the latest call.

    Notes
    -----
    Inputs in float16 or bfloat16 are computed and returned in float32; float64
    stays float64. A batch needs at least 2 rows after gathering.

    Examples
    --------
    >>> import torch
    >>> from losses import UniformityLoss
    >>> loss = UniformityLoss()(torch.randn(8, 4))
    >>> bool(-8.0 <= loss.item() <= 0.0)
    True
    """

    def __init__(self, *, t: float = 2.0, eps: float = 1e-12, gather_distributed: bool = False):
        super().__init__(gather_distributed=gather_distributed)
        check_positive("t", t)
        check_positive("eps", eps)
        self.t = t
        self.eps = eps

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Return the uniformity loss of ``embeddings``, shape (n_samples, n_dims)."""
        (embeddings,) = self._gather(check_embeddings(embeddings))
        return self._record(_uniformity_terms(embeddings, t=self.t, eps=self.eps))

    def extra_repr(self) -> str:
        return f"t={self.t}, eps={self.eps}, gather_distributed={self.gather_distributed}"
