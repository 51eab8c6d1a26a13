"""Embedding extraction from any named layer through a forward hook."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

POOLINGS = ("mean", "first", "flatten")
OUT_DTYPES = ("float32", "float16")


def find_layer(model: nn.Module, layer: str) -> nn.Module:
    """Return the submodule called ``layer`` (a name from ``model.named_modules()``)."""
    modules = dict(model.named_modules())
    if layer not in modules:
        names = [name for name in modules if name]
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        raise ValueError(f"layer {layer!r} not found in {type(model).__name__}; layers: {shown}")
    return modules[layer]


def hidden_state(output) -> torch.Tensor:
    """Take the hidden-state tensor out of a layer's output.

    Handles a plain tensor, a tuple or list whose first element is a tensor
    (Hugging Face transformer layers), and a mapping or ``ModelOutput`` with
    ``last_hidden_state`` or ``hidden_states``, or whose first value is a tensor.

    Raises
    ------
    TypeError
        Naming the types found, for any other output.
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        for key in ("last_hidden_state", "hidden_states"):
            value = output.get(key)
            if isinstance(value, torch.Tensor):
                return value
        values = list(output.values())
        if values and isinstance(values[0], torch.Tensor):
            return values[0]
        found = {key: type(value).__name__ for key, value in output.items()}
        raise TypeError(f"layer output of type {type(output).__name__} has no tensor to use; found {found}")
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if isinstance(output, (tuple, list)):
        found = [type(item).__name__ for item in output]
        raise TypeError(
            f"layer output is a {type(output).__name__} whose first element is not a tensor; found {found}"
        )
    raise TypeError(
        f"unsupported layer output type {type(output).__name__}; expected a tensor, a tuple or "
        "list starting with a tensor, or a mapping/ModelOutput with last_hidden_state"
    )


def pool(hidden: torch.Tensor, pooling: str, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Reduce a hidden state to one vector per sample, shape (batch, n_dims).

    2-d input is returned as it is. For (batch, seq, hidden) input ``"mean"``
    averages over unmasked tokens and ``"first"`` takes the first token. For
    conv maps (batch, C, H, W) ``"mean"`` averages over space. ``"flatten"``
    flattens every axis but the first.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"invalid pooling {pooling!r}; expected one of {POOLINGS}")
    if hidden.dim() == 2:
        return hidden
    if pooling == "flatten":
        return hidden.flatten(start_dim=1)
    if hidden.dim() == 3:
        if pooling == "first":
            return hidden[:, 0]
        if attention_mask is not None:
            weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
            return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
        return hidden.mean(dim=1)
    if pooling == "first":
        raise ValueError(f"pooling 'first' needs a (batch, seq, hidden) output, got shape {tuple(hidden.shape)}")
    return hidden.flatten(start_dim=2).mean(dim=2)


class LayerCapture:
    """Context manager that stores a layer's pooled output on every forward pass.

    The hook is removed on exit, also when the forward pass raises. Stored
    tensors are detached and moved to the CPU unless ``keep_graph`` is set
    (used during training, where a regulariser needs the gradient).
    """

    def __init__(self, model: nn.Module, layer: str, *, pooling: str = "mean", keep_graph: bool = False):
        self.module = find_layer(model, layer)
        self.layer = layer
        self.pooling = pooling
        self.keep_graph = keep_graph
        self.attention_mask = None
        self.outputs: list[torch.Tensor] = []
        self._handle = None

    def __enter__(self):
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc_info):
        self._handle.remove()
        self._handle = None
        return False

    def _hook(self, module, inputs, output):
        vectors = pool(hidden_state(output), self.pooling, self.attention_mask)
        self.outputs.append(vectors if self.keep_graph else vectors.detach().float().cpu())

    def pop(self) -> torch.Tensor:
        """Return the output of the latest forward pass and clear the store."""
        if not self.outputs:
            raise RuntimeError(f"layer {self.layer!r} produced no output in the forward pass")
        latest = self.outputs[-1]
        self.outputs.clear()
        return latest


@torch.no_grad()
def extract_images(
    model: nn.Module,
    images: np.ndarray,
    *,
    layer: str,
    batch_size: int = 512,
    pooling: str = "mean",
    transform=None,
    progress: bool = False,
    out: str | Path | None = None,
    out_dtype: str = "float32",
    distributed: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the model over images and return embeddings, predictions and confidences.

    Parameters
    ----------
    model : nn.Module
        A classifier returning logits of shape (batch, n_classes).
    images : ndarray of shape (n, C, H, W), float32
        A memory map (``np.load(path, mmap_mode="r")``) works too; batches
        are read from it one at a time.
    layer : str
        Name of the layer whose output is the embedding.
    transform : callable, optional
        Applied to each float tensor batch before the model (for example a
        saved artifact-stripping transform).
    progress : bool
        Show a progress bar (on the main process only).
    out : str or Path, optional
        Write the embeddings batch by batch to this ``.npy`` file instead of
        keeping them in memory, and return them as a read-only memory map.
        The file appears under its name only when it is complete.
    out_dtype : {"float32", "float16"}
        dtype of the ``out`` file; float16 halves its size, and values beyond
        the float16 range (65504) become infinite, with a warning.
    distributed : bool
        Under ``accelerate launch`` with several processes, process ``r`` of
        ``p`` runs rows ``r, r + p, r + 2p, ...`` and every batch is gathered
        to all processes, so each returns the embeddings of every row in input
        order. Only the main process writes ``out`` (the others read it once
        it is complete, so ``out`` must be on a file system all of them
        share) and shows the progress bar. Every process must call this
        function with the same arguments. Without a launcher it runs as one
        process.

    Returns
    -------
    embeddings : ndarray of shape (n, n_dims), float32 (or ``out_dtype``)
    predictions : ndarray of shape (n,), int64
    confidence : ndarray of shape (n,), float32, the top softmax probability
    """
    from mitigate.progress import progress_bar

    if out_dtype not in OUT_DTYPES:
        raise ValueError(f"invalid out_dtype={out_dtype!r}; expected one of {OUT_DTYPES}")
    state = _process_state(distributed)
    n_rows = images.shape[0]
    shard = _Shard(n_rows, state.process_index, state.num_processes)
    sink = _EmbeddingSink(n_rows, out if state.is_main_process else None, out_dtype)

    model.eval()
    device = next(model.parameters()).device
    starts = range(0, shard.size, batch_size)
    try:
        with LayerCapture(model, layer, pooling=pooling) as capture:
            for start in progress_bar(starts, desc=f"extract {layer}",
                                      enabled=progress and state.is_main_process):
                stop = min(start + batch_size, shard.size)
                batch = torch.from_numpy(shard.read(images, start, stop)).to(device)
                if transform is not None:
                    batch = transform(batch)
                logits = model(batch)
                vectors = capture.pop()
                top = torch.softmax(logits.float(), dim=1).max(dim=1)
                parts = [vectors, top.indices.cpu(), top.values.cpu()]
                if state.num_processes > 1:
                    parts = [shard.interleave(part) for part in parts]
                rows = shard.global_rows(start, stop)
                sink.write(rows, *(part[: rows.stop - rows.start].numpy() for part in parts))
    except BaseException:
        sink.discard()
        raise
    result = sink.finish()
    if out is not None and state.num_processes > 1:
        # The main process renames the file in finish(); the others read it after.
        state.wait_for_everyone()
        if not state.is_main_process:
            result = (np.load(out, mmap_mode="r"),) + result[1:]
    return result


def is_main_process() -> bool:
    """Return False only on a process of rank above 0 in an initialised torch.distributed group.

    Under ``accelerate launch`` every process runs the whole pipeline; output
    files that need one writer check this.
    """
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _process_state(distributed: bool):
    """Return Accelerate's process state, or a one-process stand-in."""
    if distributed:
        from accelerate import PartialState
        from accelerate.utils import parse_flag_from_env

        # Accelerator() reads ACCELERATE_USE_CPU but PartialState() does not;
        # both must agree, or a later Accelerator rejects the shared state.
        return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    return _SingleProcess()


class _SingleProcess:
    process_index = 0
    num_processes = 1
    is_main_process = True

    def wait_for_everyone(self) -> None:
        pass


class _Shard:
    """Rows ``rank, rank + world, ...`` of ``n_rows``, padded to equal length on every process.

    Equal lengths let every process gather the same batch shapes; padding
    repeats the last row and is cut off after the gather.
    """

    def __init__(self, n_rows: int, rank: int, world: int):
        self.world = world
        self.size = -(-n_rows // world)
        self.n_rows = n_rows
        self.rows = np.minimum(np.arange(self.size) * world + rank, n_rows - 1)

    def read(self, images, start: int, stop: int) -> np.ndarray:
        if self.world == 1:
            batch = images[start:stop]
        else:
            batch = images[self.rows[start:stop]]
        # torch.from_numpy needs a writable array; a read-only memory map is copied.
        return batch if batch.flags.writeable else np.array(batch)

    def global_rows(self, start: int, stop: int) -> slice:
        """Return the input rows that the gathered batch ``start:stop`` covers, in order."""
        return slice(start * self.world, min(stop * self.world, self.n_rows))

    def interleave(self, part: torch.Tensor) -> torch.Tensor:
        """Gather ``part`` from every process and put its rows in input order."""
        from accelerate.utils import gather as gather_tensors

        gathered = gather_tensors(part.contiguous())
        # gather concatenates the processes' batches: (world * batch, ...).
        # Row j of process r is input row (start + j) * world + r.
        batch = part.shape[0]
        stacked = gathered.reshape(self.world, batch, *part.shape[1:])
        return stacked.transpose(0, 1).reshape(self.world * batch, *part.shape[1:])


class _EmbeddingSink:
    """Collects embeddings in memory, or streams them to an ``.npy`` memory map."""

    def __init__(self, n_rows: int, path: str | Path | None, dtype: str):
        self.n_rows = n_rows
        self.path = None if path is None else Path(path)
        self.dtype = np.dtype(dtype) if path is not None else np.dtype(np.float32)
        self.embeddings = None
        self.predictions = np.empty(n_rows, dtype=np.int64)
        self.confidence = np.empty(n_rows, dtype=np.float32)
        self._tmp = None
        self._n_overflow = 0

    def write(self, rows: slice, vectors: np.ndarray, predictions, confidence) -> None:
        if self.embeddings is None:
            self._allocate(vectors.shape[1])
        if self.dtype != np.float32:
            with np.errstate(over="ignore"):  # counted and reported in finish()
                converted = vectors.astype(self.dtype)
            self._n_overflow += int(np.sum(~np.isfinite(converted) & np.isfinite(vectors)))
            vectors = converted
        self.embeddings[rows] = vectors
        self.predictions[rows] = predictions
        self.confidence[rows] = confidence

    def _allocate(self, n_dims: int) -> None:
        shape = (self.n_rows, n_dims)
        if self.path is None:
            self.embeddings = np.empty(shape, dtype=np.float32)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self.embeddings = np.lib.format.open_memmap(self._tmp, mode="w+", dtype=self.dtype, shape=shape)

    def finish(self):
        if self.embeddings is None:
            self._allocate(0)
        embeddings = self.embeddings
        if self.path is not None:
            embeddings.flush()
            del embeddings
            self.embeddings = None
            os.replace(self._tmp, self.path)
            embeddings = np.load(self.path, mmap_mode="r")
            logger.info("wrote %d embeddings of %d dims (%s) to %s",
                        *embeddings.shape, self.dtype.name, self.path)
        if self._n_overflow:
            warnings.warn(
                f"{self._n_overflow} embedding value(s) exceed the {self.dtype.name} range and "
                f"were stored as infinity in {self.path}; use out_dtype='float32'",
                UserWarning,
                stacklevel=3,
            )
        return embeddings, self.predictions, self.confidence

    def discard(self) -> None:
        """Remove the partial file after a failure."""
        self.embeddings = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
