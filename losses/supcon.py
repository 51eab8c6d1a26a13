"""Supervised contrastive loss (Khosla et al., 2020)."""

from __future__ import annotations

import warnings

import torch

from losses._base import RegularizerBase
from losses._checks import check_batch_size, check_embeddings, check_labels, check_positive
from losses._ops import normalize_rows


def supcon(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float = 0.1,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Compute the supervised contrastive loss of a labelled batch.

    See :class:`SupConLoss` for the formula, range, defaults and the case of
    a batch where no sample shares its label.

    Parameters
    ----------
    embeddings : torch.Tensor of shape (n_samples, n_dims)
        Any float dtype; n_samples >= 2.
    labels : torch.Tensor of shape (n_samples,)
        Integer class labels.
    temperature : float, default=0.1
        Softmax temperature, greater than 0.
    eps : float, default=1e-12
        Rows with an L2 norm at most ``eps`` are treated as the zero vector.

    Returns
    -------
    torch.Tensor
        Scalar in ``torch.promote_types(embeddings.dtype, torch.float32)``.
    """
    return _supcon_terms(embeddings, labels, temperature=temperature, eps=eps)["loss"]


def _supcon_terms(
    embeddings: torch.Tensor, labels: torch.Tensor, *, temperature: float, eps: float
) -> dict[str, torch.Tensor]:
    check_positive("temperature", temperature)
    check_positive("eps", eps)
    embeddings = check_embeddings(embeddings)
    n_samples = embeddings.shape[0]
    labels = check_labels(labels, n_samples=n_samples)
    check_batch_size(
        n_samples,
        minimum=2,
        owner="SupCon",
        reason="because each anchor is contrasted with the other samples",
    )

    unit = normalize_rows(embeddings, eps=eps)
    logits = unit @ unit.T / temperature
    is_self = torch.eye(n_samples, dtype=torch.bool, device=embeddings.device)
    is_positive = (labels[:, None] == labels[None, :]) & ~is_self

    # The denominator runs over every sample except the anchor itself.
    log_normalizer = torch.logsumexp(logits.masked_fill(is_self, float("-inf")), dim=1)
    log_probs = logits - log_normalizer[:, None]

    positives_per_anchor = is_positive.sum(dim=1)
    has_positive = positives_per_anchor > 0
    n_anchors = has_positive.sum()
    if n_anchors == 0:
        warnings.warn(
            "SupCon: no sample in the batch shares its label with another, so the loss is 0 "
            "with a zero gradient; sample batches with at least two samples of some class",
            UserWarning,
            stacklevel=2,
        )
        zero = (embeddings * 0).sum()
        return {"loss": zero, "n_anchors": n_anchors}

    # Mean log-probability of the positives of each anchor; entries outside the mask are finite.
    positive_log_probs = torch.where(is_positive, log_probs, torch.zeros_like(log_probs)).sum(dim=1)
    mean_positive_log_probs = positive_log_probs[has_positive] / positives_per_anchor[has_positive]
    loss = -mean_positive_log_probs.mean()
    return {"loss": loss, "n_anchors": n_anchors}


class SupConLoss(RegularizerBase):
    r"""Supervised contrastive loss over L2-normalized embeddings and integer labels.

    .. math::

        \mathcal{L} = \frac{1}{|I^+|} \sum_{i \in I^+} \frac{-1}{|P(i)|}
            \sum_{p \in P(i)} \log
            \frac{\exp(z_i \cdot z_p / \tau)}{\sum_{a \neq i} \exp(z_i \cdot z_a / \tau)}

    where ``P(i)`` is the set of other samples with the label of anchor ``i``
    and ``I+`` is the set of anchors with at least one positive. This is the
    "L_out" form of Khosla et al. (2020), "Supervised Contrastive Learning",
    whose experiments use ``tau = 0.1``. Anchors without a positive are left
    out of the mean. For several views per sample, concatenate the views
    along dim 0 and repeat the labels.

    Lower is better. The value is at least the mean of ``log |P(i)|`` over
    the anchors, so at least 0, and has no upper bound. It falls as samples
    of a class move together and away from the other classes.

    Parameters
    ----------
    temperature : float, default=0.1
        Softmax temperature ``tau``, greater than 0. Small values such as
        0.01 are safe because the logits are computed in float32 or float64
        and normalized with ``logsumexp``.
    eps : float, default=1e-12
        Rows whose L2 norm is at most ``eps`` are mapped to the zero vector
        with a zero gradient.
    gather_distributed : bool, default=False
        Gather embeddings and labels from every process, so that each anchor
        is contrasted with the whole global batch. Before DDP's averaging,
        the gradient on the local embeddings is ``world_size`` times the
        matching slice of the single-process gradient. After it, parameter
        gradients equal those of one process on the concatenated batch (see
        :mod:`losses.distributed`). Has no effect when ``torch.distributed``
        is not initialized.

    Attributes
    ----------
    last_stats : dict of str to float
        ``"loss"`` and ``"n_anchors"`` (anchors with at least one positive)
        from the latest call.

    Notes
    -----
    When no anchor in the batch has a positive, ``forward`` emits a
    ``UserWarning`` and returns a zero instead of raising. The zero is
    connected to the graph of ``embeddings``, so ``backward`` runs and gives
    zero gradients.
    A batch of fewer than 2 rows raises ``ValueError``. Half-precision
    inputs are computed and returned in float32.
    """

    def __init__(
        self, *, temperature: float = 0.1, eps: float = 1e-12, gather_distributed: bool = False
    ):
        super().__init__(gather_distributed=gather_distributed)
        check_positive("temperature", temperature)
        check_positive("eps", eps)
        self.temperature = temperature
        self.eps = eps

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Return the loss of ``embeddings`` (n_samples, n_dims) with ``labels`` (n_samples,)."""
        embeddings = check_embeddings(embeddings)
        labels = check_labels(labels, n_samples=embeddings.shape[0])
        embeddings, labels = self._gather(embeddings, labels)
        terms = _supcon_terms(embeddings, labels, temperature=self.temperature, eps=self.eps)
        return self._record(terms)

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, eps={self.eps}, "
            f"gather_distributed={self.gather_distributed}"
        )
