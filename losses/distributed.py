"""Autograd-aware all-gather, so a loss can see the batch of every process.

Batch statistics such as uniformity or a covariance get better with more
rows, and under data parallelism each process holds only its own slice of the
batch. :func:`all_gather_rows` concatenates the slices of every process in rank
order and, for floating-point tensors, sends gradients back to the process
that owns each row.

Why not another gather
----------------------
``accelerate.gather`` (accelerate 1.16) and a plain
``torch.distributed.all_gather`` fill new buffers, so the gathered tensor has
no graph and no gradient reaches the embeddings through it. Putting the local
tensor back into its slot restores a gradient for the local rows only, and
each process still misses the gradient that the losses of the other
processes send to its rows. Rescaling or all-reducing the loss does not
repair that.

``torch.distributed.nn.functional.all_gather`` does carry gradients with the
same scale as this module, but torch 2.13 marks it deprecated and it needs the
same number of rows on every process. The function here uses only public
collectives (``all_gather`` and ``all_reduce``) and accepts a different batch
size on each process, such as the last batch of an epoch.

Gradient scale
--------------
Every process computes the same loss ``L`` on the concatenated batch. In
backward, each process all-reduces (sums) the gradient of ``L`` with respect to
the gathered tensor and keeps the rows it owns. So, before DDP's averaging, the
gradient on a process's local embeddings is ``world_size`` times the matching
slice of the gradient that a single process gets for ``L`` on the whole
batch. DDP then divides parameter gradients by ``world_size`` when it averages
them, so after DDP's averaging the parameter gradients equal those of one
process training on the concatenated batch. A per-process mean cross-entropy
under DDP also matches one process on the concatenated batch (when every
process has the same batch size), so the regularizer keeps the weight
relative to the task loss that it has in single-process training.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """Return True when a default ``torch.distributed`` process group is initialized."""
    return dist.is_available() and dist.is_initialized()


def all_gather_rows(tensor: torch.Tensor, *, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Concatenate ``tensor`` from every process along dim 0, in rank order.

    Parameters
    ----------
    tensor : torch.Tensor of shape (n_local, ...)
        This process's rows. The number of rows may differ between processes,
        the trailing dimensions may not.
    group : torch.distributed.ProcessGroup, optional
        Process group to gather over. Defaults to the default group.

    Returns
    -------
    torch.Tensor of shape (n_total, ...)
        The rows of every process. Floating-point tensors keep a graph: the
        backward pass sums the gradient over processes and returns this
        process's rows (see the module docstring for the resulting scale).
        Integer and boolean tensors, such as labels, come back without one.
        When ``torch.distributed`` is not initialized, ``tensor`` itself is
        returned, so single-process code needs no special case.

    Raises
    ------
    ValueError
        If the trailing dimensions differ between processes. Every process
        raises, because each receives the shapes of all the others.

    Notes
    -----
    This is a collective call in both forward and backward: every process in
    the group must call it, in the same order, and must run ``backward`` on a
    loss that uses the result.
    """
    if not is_distributed():
        return tensor

    row_counts = _gather_row_counts(tensor, group=group)
    if tensor.is_floating_point():
        return _AllGatherRows.apply(tensor, row_counts, group)
    if tensor.dtype == torch.bool:
        # Booleans travel as uint8, which every backend supports.
        return _gather_padded(tensor.to(torch.uint8), row_counts, group=group).bool()
    return _gather_padded(tensor, row_counts, group=group)


def _gather_row_counts(tensor: torch.Tensor, *, group: dist.ProcessGroup | None) -> list[int]:
    shape = torch.tensor(tensor.shape, dtype=torch.long, device=tensor.device)
    shapes = [torch.empty_like(shape) for _ in range(dist.get_world_size(group=group))]
    dist.all_gather(shapes, shape, group=group)

    shapes_as_tuples = [tuple(rank_shape.tolist()) for rank_shape in shapes]
    trailing_shapes = {rank_shape[1:] for rank_shape in shapes_as_tuples}
    if len(trailing_shapes) > 1:
        raise ValueError(
            "all_gather_rows needs the same trailing dimensions on every process, "
            f"got shapes {shapes_as_tuples} in rank order"
        )
    return [rank_shape[0] for rank_shape in shapes_as_tuples]


def _gather_padded(
    tensor: torch.Tensor, row_counts: list[int], *, group: dist.ProcessGroup | None
) -> torch.Tensor:
    # all_gather needs equal shapes, so pad every slice to the largest row count and trim after.
    max_rows = max(row_counts)
    padded = tensor.new_zeros((max_rows, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    buffers = [torch.empty_like(padded) for _ in row_counts]
    dist.all_gather(buffers, padded, group=group)
    return torch.cat([buffer[:rows] for buffer, rows in zip(buffers, row_counts)])


class _AllGatherRows(torch.autograd.Function):
    """All-gather whose backward sums the gradient over processes and keeps the local rows."""

    @staticmethod
    def forward(ctx, tensor, row_counts, group):
        ctx.row_counts = row_counts
        ctx.group = group
        ctx.rank = dist.get_rank(group=group)
        return _gather_padded(tensor.detach(), row_counts, group=group)

    @staticmethod
    def backward(ctx, grad_gathered):
        # Clone because all_reduce works in place and autograd may reuse grad_gathered.
        grad_sum = grad_gathered.contiguous().clone()
        dist.all_reduce(grad_sum, op=dist.ReduceOp.SUM, group=ctx.group)

        start = sum(ctx.row_counts[: ctx.rank])
        stop = start + ctx.row_counts[ctx.rank]
        return grad_sum[start:stop], None, None
