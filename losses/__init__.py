"""Collapse regularizers as ``torch.nn.Module`` losses, with pure functional forms.

Each loss takes embeddings of shape ``(n_samples, n_dims)``, computes in
float32 (float64 inputs stay float64), validates shapes and batch sizes with a
``ValueError``, records its parts in ``last_stats``, and can gather the batch
of every process with gradients (``gather_distributed=True``).

This package depends on torch only and never imports :mod:`mitigate`, so a
training script can use it without the attractor toolkit.

Examples
--------
>>> import torch
>>> from losses import UniformityLoss
>>> regularizer = UniformityLoss(t=2.0)
>>> loss = regularizer(torch.randn(16, 8))
>>> sorted(regularizer.last_stats)
['loss', 'mean_squared_distance']
"""

from losses import distributed, functional
from losses.alignment import AlignmentLoss
from losses.barlow_twins import BarlowTwinsLoss
from losses.collapse_penalty import CollapsePenalty
from losses.effective_rank import EffectiveRankLoss
from losses.spectral_decoupling import SpectralDecouplingLoss
from losses.supcon import SupConLoss
from losses.uniformity import UniformityLoss
from losses.vicreg import CovarianceLoss, VarianceLoss, VICRegLoss

__all__ = [
    "AlignmentLoss",
    "BarlowTwinsLoss",
    "CollapsePenalty",
    "CovarianceLoss",
    "EffectiveRankLoss",
    "SpectralDecouplingLoss",
    "SupConLoss",
    "UniformityLoss",
    "VICRegLoss",
    "VarianceLoss",
    "distributed",
    "functional",
]
