"""Input validation shared by every loss: shapes, dtypes, batch sizes and hyper-parameters.

Every public function and module in this package validates its inputs through
these helpers, so that a bad call raises the same ``ValueError`` wording
wherever it happens.
"""

from __future__ import annotations

import math
import numbers

import torch

_EMBEDDINGS_SHAPE = "(n_samples, n_dims)"


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Return the dtype a loss computes in: float32 for half types, float64 stays float64."""
    return torch.promote_types(dtype, torch.float32)


def check_embeddings(embeddings: torch.Tensor, *, name: str = "embeddings") -> torch.Tensor:
    """Validate a 2-D floating-point batch and upcast it to the compute dtype.

    Parameters
    ----------
    embeddings : torch.Tensor of shape (n_samples, n_dims)
        Floating-point tensor of any float dtype.
    name : str, default="embeddings"
        Argument name used in error messages.

    Returns
    -------
    torch.Tensor of shape (n_samples, n_dims)
        The same values in float32 (float16 and bfloat16 inputs) or float64
        (float64 inputs). The cast is differentiable.

    Raises
    ------
    ValueError
        If ``embeddings`` is not 2-D, has zero columns, or is not floating point.
    """
    if not isinstance(embeddings, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(embeddings).__name__}")
    if embeddings.ndim != 2:
        raise ValueError(
            f"{name} must have shape {_EMBEDDINGS_SHAPE}, got shape {tuple(embeddings.shape)}; "
            "flatten the trailing dimensions, for example with embeddings.flatten(1)"
        )
    if embeddings.shape[1] == 0:
        raise ValueError(
            f"{name} must have at least one column, got shape {tuple(embeddings.shape)}"
        )
    if not embeddings.is_floating_point():
        raise ValueError(
            f"{name} must be a floating-point tensor, got dtype {embeddings.dtype}; "
            "convert it with .float()"
        )
    return embeddings.to(compute_dtype(embeddings.dtype))


def check_same_shape(
    reference: torch.Tensor, other: torch.Tensor, *, reference_name: str, other_name: str
) -> None:
    """Raise ``ValueError`` unless two batches of embeddings have the same shape."""
    if reference.shape != other.shape:
        raise ValueError(
            f"{other_name} must have the same shape as {reference_name}, "
            f"{tuple(reference.shape)}, got shape {tuple(other.shape)}"
        )


def check_batch_size(n_samples: int, *, minimum: int, owner: str, reason: str) -> None:
    """Raise ``ValueError`` when a batch has fewer rows than a statistic needs.

    Parameters
    ----------
    n_samples : int
        Rows in the batch, after any gathering across processes.
    minimum : int
        Smallest batch the statistic is defined for.
    owner : str
        Name of the loss, used in the message.
    reason : str
        Why that minimum exists, completing the sentence "needs ... samples".
    """
    if n_samples < minimum:
        raise ValueError(
            f"{owner} needs a batch of at least {minimum} samples {reason}, "
            f"got a batch of {n_samples}; use a larger batch"
        )


def check_labels(labels: torch.Tensor, *, n_samples: int) -> torch.Tensor:
    """Validate integer class labels of shape (n_samples,) and return them unchanged."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.shape != (n_samples,):
        raise ValueError(
            f"labels must have shape (n_samples,) = ({n_samples},) to match the embeddings, "
            f"got shape {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(
            f"labels must be an integer tensor, got dtype {labels.dtype}; convert it with .long()"
        )
    return labels


def check_member_mask(member_mask: torch.Tensor, *, n_samples: int) -> torch.Tensor:
    """Validate a boolean member mask of shape (n_samples,) and return it unchanged."""
    if not isinstance(member_mask, torch.Tensor):
        raise TypeError(f"member_mask must be a torch.Tensor, got {type(member_mask).__name__}")
    if member_mask.shape != (n_samples,):
        raise ValueError(
            f"member_mask must have shape (n_samples,) = ({n_samples},) to match the embeddings, "
            f"got shape {tuple(member_mask.shape)}"
        )
    if member_mask.dtype != torch.bool:
        raise ValueError(
            f"member_mask must be a boolean tensor, got dtype {member_mask.dtype}; "
            "build it with a comparison such as cluster_labels == attractor_id"
        )
    return member_mask


def check_positive(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number greater than zero."""
    if not _is_real_number(value) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number greater than 0, got {value!r}")


def check_non_negative(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number greater than or equal to zero."""
    if not _is_real_number(value) or not value >= 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def check_non_negative_int(name: str, value: int) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer greater than or equal to zero."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        allowed = ", ".join(repr(choice) for choice in choices)
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def _is_real_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
