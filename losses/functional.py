"""Pure functional forms of every loss in :mod:`losses`.

Each function validates its inputs like the matching module, computes in
``torch.promote_types(dtype, torch.float32)`` and returns a scalar tensor. The
functions keep no state and never gather across processes: call
:func:`losses.distributed.all_gather_rows` on the inputs first for that.
"""

from losses.alignment import alignment
from losses.barlow_twins import barlow_twins
from losses.collapse_penalty import attractor_collapse_score, collapse_penalty
from losses.effective_rank import effective_rank, effective_rank_loss
from losses.spectral_decoupling import spectral_decoupling
from losses.supcon import supcon
from losses.uniformity import uniformity
from losses.vicreg import covariance, variance, vicreg

__all__ = [
    "alignment",
    "attractor_collapse_score",
    "barlow_twins",
    "collapse_penalty",
    "covariance",
    "effective_rank",
    "effective_rank_loss",
    "spectral_decoupling",
    "supcon",
    "uniformity",
    "variance",
    "vicreg",
]
