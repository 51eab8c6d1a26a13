"""Spectral decoupling penalty on logits (Pezeshki et al., 2021)."""

from __future__ import annotations

from typing import Any

import torch

from losses._base import RegularizerBase
from losses._checks import check_batch_size, check_embeddings, check_non_negative, check_non_negative_int


def spectral_decoupling(logits: torch.Tensor, *, weight: float = 0.1) -> torch.Tensor:
    """Compute the spectral decoupling penalty ``weight / 2 * mean_i ||logits_i||^2``.

    See :class:`SpectralDecouplingLoss` for the paper, range and warm-up.

    Parameters
    ----------
    logits : torch.Tensor of shape (n_samples, n_classes)
        Any float dtype; n_samples >= 1.
    weight : float, default=0.1
        Coefficient ``lambda``, >= 0.

    Returns
    -------
    torch.Tensor
        Scalar in ``torch.promote_types(logits.dtype, torch.float32)``.
    """
    return _spectral_decoupling_terms(logits, weight=weight)["loss"]


def _spectral_decoupling_terms(logits: torch.Tensor, *, weight: float) -> dict[str, torch.Tensor]:
    check_non_negative("weight", weight)
    logits = check_embeddings(logits, name="logits")
    check_batch_size(logits.shape[0], minimum=1, owner="spectral decoupling", reason="(one row)")

    mean_squared_norm = logits.pow(2).sum(dim=1).mean()
    return {"loss": weight / 2 * mean_squared_norm, "mean_squared_norm": mean_squared_norm}


class SpectralDecouplingLoss(RegularizerBase):
    r"""Penalty on the squared norm of the logits, with an optional warm-up.

    .. math::

        \mathcal{L}_{\mathrm{SD}} = \frac{\lambda}{2} \cdot \frac{1}{n}
            \sum_{i=1}^{n} \lVert \hat y_i \rVert_2^2

    from Pezeshki et al. (2021), "Gradient Starvation: A Learning Proclivity
    in Neural Networks". Added to the cross-entropy, it penalizes large
    logits, which is the paper's remedy for gradient starvation: features
    learned first suppressing the gradient that would teach the others.

    Lower is better. The value is at least 0 and has no upper bound.

    Parameters
    ----------
    weight : float, default=0.1
        Coefficient ``lambda``, >= 0.
    warmup_steps : int, default=0
        Number of initial steps during which ``forward`` returns 0, so the
        classifier can fit first.
    gather_distributed : bool, default=False
        Average over the logits of every process (see
        :mod:`losses.distributed`). The value then equals the penalty of the
        concatenated batch. Has no effect when ``torch.distributed`` is not
        initialized.

    Attributes
    ----------
    num_calls : int
        Calls to ``forward`` made in training mode without an explicit
        ``step``. It is the default step counter for the warm-up and is
        saved in ``state_dict`` (as extra state), so a resumed run continues
        the warm-up where it stopped.
    last_stats : dict of str to float
        ``"loss"`` (0 during warm-up), ``"mean_squared_norm"`` (the mean
        squared logit norm, also during warm-up) and ``"step"`` from the
        latest call.

    Notes
    -----
    The step of a call is the ``step`` argument when given, otherwise
    ``num_calls`` before the call. Calls in eval mode and calls with an
    explicit ``step`` do not advance ``num_calls``. During warm-up, the
    returned zero is connected to the graph of ``logits``, so ``backward``
    runs and every parameter receives a zero gradient. Half-precision inputs
    are computed and returned in float32.
    """

    def __init__(
        self, *, weight: float = 0.1, warmup_steps: int = 0, gather_distributed: bool = False
    ):
        super().__init__(gather_distributed=gather_distributed)
        check_non_negative("weight", weight)
        check_non_negative_int("warmup_steps", warmup_steps)
        self.weight = weight
        self.warmup_steps = warmup_steps
        self.num_calls = 0

    def forward(self, logits: torch.Tensor, step: int | None = None) -> torch.Tensor:
        """Return the penalty of ``logits`` (n_samples, n_classes), or 0 before ``warmup_steps``.

        Parameters
        ----------
        logits : torch.Tensor of shape (n_samples, n_classes)
            Raw model outputs before softmax.
        step : int, optional
            Current training step. When omitted, the module uses and then
            advances its own counter ``num_calls`` (in training mode only).
        """
        if step is None:
            step = self.num_calls
            if self.training:
                self.num_calls += 1
        else:
            check_non_negative_int("step", step)

        (logits,) = self._gather(check_embeddings(logits, name="logits"))
        terms = _spectral_decoupling_terms(logits, weight=self.weight)
        if step < self.warmup_steps:
            terms["loss"] = terms["loss"] * 0.0
        terms["step"] = torch.tensor(float(step))
        return self._record(terms)

    def get_extra_state(self) -> dict[str, Any]:
        return {"num_calls": self.num_calls}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.num_calls = int(state["num_calls"])

    def extra_repr(self) -> str:
        return (
            f"weight={self.weight}, warmup_steps={self.warmup_steps}, "
            f"gather_distributed={self.gather_distributed}"
        )
