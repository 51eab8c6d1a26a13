"""Embedding extraction from any named layer through a forward hook."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

POOLINGS = ("mean", "first", "flatten")


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
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the model over images and return embeddings, predictions and confidences.

    Parameters
    ----------
    model : nn.Module
        A classifier returning logits of shape (batch, n_classes).
    images : ndarray of shape (n, C, H, W), float32
    layer : str
        Name of the layer whose output is the embedding.
    transform : callable, optional
        Applied to each float tensor batch before the model (for example a
        saved artifact-stripping transform).

    Returns
    -------
    embeddings : ndarray of shape (n, n_dims), float32
    predictions : ndarray of shape (n,), int64
    confidence : ndarray of shape (n,), float32, the top softmax probability
    """
    from mitigate.progress import progress_bar

    model.eval()
    device = next(model.parameters()).device
    chunks, predictions, confidence = [], [], []
    starts = range(0, images.shape[0], batch_size)
    with LayerCapture(model, layer, pooling=pooling) as capture:
        for start in progress_bar(starts, desc=f"extract {layer}", enabled=progress):
            batch = torch.from_numpy(images[start:start + batch_size]).to(device)
            if transform is not None:
                batch = transform(batch)
            logits = model(batch)
            chunks.append(capture.pop())
            probs = torch.softmax(logits.float(), dim=1)
            top = probs.max(dim=1)
            predictions.append(top.indices.cpu())
            confidence.append(top.values.cpu())
    return (
        torch.cat(chunks).numpy(),
        torch.cat(predictions).numpy().astype(np.int64),
        torch.cat(confidence).numpy(),
    )
