"""Numerical building blocks shared by several losses."""

from __future__ import annotations

import torch


def normalize_rows(embeddings: torch.Tensor, *, eps: float) -> torch.Tensor:
    """Scale every row to unit L2 norm, mapping rows of norm <= ``eps`` to zero.

    ``torch.nn.functional.normalize`` divides by ``max(norm, eps)``, so a zero
    row gets a gradient of about ``1 / eps``, which overflows once it is cast
    back to a float16 input. Here a row whose norm is at most ``eps`` becomes
    the zero vector with a zero gradient instead. Rows above ``eps`` are
    normalized exactly as ``F.normalize`` does.
    """
    norms = torch.linalg.vector_norm(embeddings, dim=1, keepdim=True)
    is_tiny = norms <= eps

    # The where() keeps the division away from zero, so its gradient stays finite.
    safe_norms = torch.where(is_tiny, torch.ones_like(norms), norms)
    return torch.where(is_tiny, torch.zeros_like(embeddings), embeddings / safe_norms)


def squared_distances_upper(embeddings: torch.Tensor) -> torch.Tensor:
    """Return squared Euclidean distances of all pairs i < j, shape (n * (n - 1) / 2,).

    Uses the Gram matrix, ``|a|^2 + |b|^2 - 2 a.b``, clamped at zero because
    rounding can make the distance of two identical rows slightly negative.
    """
    n_samples = embeddings.shape[0]
    squared_norms = embeddings.pow(2).sum(dim=1)
    gram = embeddings @ embeddings.T
    distances = (squared_norms[:, None] + squared_norms[None, :] - 2 * gram).clamp_min(0)

    rows, cols = torch.triu_indices(n_samples, n_samples, offset=1, device=embeddings.device)
    return distances[rows, cols]


def off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """Return the off-diagonal entries of a square matrix as a 1-D tensor."""
    size = matrix.shape[0]
    is_diagonal = torch.eye(size, dtype=torch.bool, device=matrix.device)
    return matrix[~is_diagonal]


def column_covariance(embeddings: torch.Tensor) -> torch.Tensor:
    """Return the (n_dims, n_dims) covariance of the columns, normalized by n_samples - 1."""
    centered = embeddings - embeddings.mean(dim=0)
    return centered.T @ centered / (embeddings.shape[0] - 1)


def total_variance(embeddings: torch.Tensor) -> torch.Tensor:
    """Return the trace of the column covariance, normalized by n_samples - 1.

    Equals half the mean squared Euclidean distance over all pairs i != j.
    """
    centered = embeddings - embeddings.mean(dim=0)
    return centered.pow(2).sum() / (embeddings.shape[0] - 1)
