"""Base class for the loss modules: optional cross-process gathering and recorded statistics."""

from __future__ import annotations

import torch
from torch import nn

from losses.distributed import all_gather_rows


class RegularizerBase(nn.Module):
    """Common behaviour of every loss module in this package.

    Subclasses validate and upcast their inputs, call :meth:`_gather` when they
    support ``gather_distributed``, compute a dict of terms with the key
    ``"loss"``, and pass it to :meth:`_record`.

    Parameters
    ----------
    gather_distributed : bool
        Whether ``forward`` gathers its inputs from every process before
        computing the loss. See :func:`losses.distributed.all_gather_rows`.
    """

    def __init__(self, *, gather_distributed: bool):
        super().__init__()
        if not isinstance(gather_distributed, bool):
            raise ValueError(f"gather_distributed must be a bool, got {gather_distributed!r}")
        self.gather_distributed = gather_distributed
        self._last_terms: dict[str, torch.Tensor] = {}

    @property
    def last_stats(self) -> dict[str, float]:
        """Values of the loss and its parts from the latest ``forward`` call, as floats.

        The tensors are stored detached and converted only when this property
        is read, so a training loop that never reads it does not synchronize
        with the GPU. Empty before the first call.
        """
        return {key: float(value) for key, value in self._last_terms.items()}

    def _gather(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self.gather_distributed:
            return tensors
        return tuple(all_gather_rows(tensor) for tensor in tensors)

    def _record(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        self._last_terms = {key: value.detach() for key, value in terms.items()}
        return terms["loss"]
