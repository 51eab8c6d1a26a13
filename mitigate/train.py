"""Classifier training with Hugging Face Accelerate, with exact resume from checkpoints.

The loop draws its own batches from a seeded permutation per epoch, so a run
resumed from a checkpoint gets the same batches as an uninterrupted one. Under
``accelerate launch`` each process takes every ``num_processes``-th sample of a
batch, and DDP averages the gradients.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from mitigate.files import atomic_path
from mitigate.progress import progress_bar

logger = logging.getLogger(__name__)

PRECISIONS = ("no", "bf16", "fp16")
CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class TrainConfig:
    """Settings of one training run.

    Parameters
    ----------
    epochs : int
        Passes over the training data.
    batch_size : int
        Global batch size (summed over processes).
    lr : float
        Adam learning rate.
    seed : int
        Seeds the model initialisation (done by the caller) and the batch order.
    mixed_precision : {"no", "bf16", "fp16"}
        Requested precision. Where the hardware cannot run it, training falls
        back to "no" with a warning, unless ``require_precision`` is set.
    require_precision : bool
        Fail instead of falling back.
    checkpoint_every : int
        Save a checkpoint every this many steps (0: only at the end of each epoch).
    """

    epochs: int = 2
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    mixed_precision: str = "no"
    require_precision: bool = False
    checkpoint_every: int = 0


@dataclass
class TrainResult:
    """Outcome of a training run: per-epoch loss, the precision used and the resume point."""

    history: list = field(default_factory=list)
    precision_used: str = "no"
    precision_note: str | None = None
    resumed_from_step: int = 0
    num_processes: int = 1


class PrecisionUnavailableError(RuntimeError):
    """Raised when a recipe demands a precision the hardware cannot run."""


def resolve_precision(requested: str, *, required: bool, cuda: bool) -> tuple[str, str | None]:
    """Return the precision to use and a note when it differs from the request."""
    if requested not in PRECISIONS:
        raise ValueError(f"invalid mixed_precision {requested!r}; expected one of {PRECISIONS}")
    if requested == "no":
        return "no", None
    if cuda:
        if requested == "bf16" and not torch.cuda.is_bf16_supported():
            supported = False
        else:
            supported = True
    else:
        # Accelerate runs fp16 only on accelerators; on the CPU it runs bf16
        # through torch's CPU autocast.
        supported = requested == "bf16"
    if supported:
        return requested, None
    note = f"mixed_precision={requested!r} is not supported on this hardware ({'cuda' if cuda else 'cpu'})"
    if required:
        raise PrecisionUnavailableError(note + "; set require_precision = false to fall back to float32")
    logger.warning("%s; training in float32 instead", note)
    return "no", note + "; used float32"


def train_classifier(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    *,
    checkpoint_dir: Path | None = None,
    regularizer: Callable | None = None,
    embedding_layer: str | None = None,
    input_transform: Callable | None = None,
    progress: bool = True,
    log_with: str | None = None,
    project_dir: Path | None = None,
) -> TrainResult:
    """Train ``model`` in place with cross-entropy, plus an optional regulariser.

    Parameters
    ----------
    model : nn.Module
        Returns logits of shape (batch, n_classes).
    images : ndarray of shape (n, C, H, W), float32
    labels : ndarray of shape (n,), int64
    config : TrainConfig
    checkpoint_dir : path, optional
        Where checkpoints go. If it contains a checkpoint of this run, training
        resumes from it.
    regularizer : callable, optional
        ``regularizer(embeddings, logits, labels, step, rows) -> scalar tensor``
        added to the loss; ``embeddings`` is the output of ``embedding_layer``
        and ``rows`` the indices of the batch's samples in ``images``.
    input_transform : callable, optional
        Applied to every input batch (for example artifact stripping).
    log_with : str, optional
        An Accelerate tracker name (for example "tensorboard"), written under
        ``project_dir``.

    Returns
    -------
    TrainResult
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    precision, note = resolve_precision(
        config.mixed_precision, required=config.require_precision, cuda=torch.cuda.is_available()
    )
    project = ProjectConfiguration(project_dir=str(project_dir)) if project_dir else None
    _reset_accelerator_state()
    accelerator = Accelerator(
        mixed_precision=precision, log_with=log_with, project_config=project
    )
    if log_with:
        accelerator.init_trackers("mitigate")

    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    model, optimizer = accelerator.prepare(model, optimizer)
    result = TrainResult(precision_used=precision, precision_note=note,
                         num_processes=accelerator.num_processes)

    start_epoch, start_step, history = _maybe_resume(checkpoint_dir, accelerator, model, optimizer)
    steps_per_epoch = _steps_per_epoch(images.shape[0], config.batch_size, accelerator.num_processes)
    result.resumed_from_step = start_epoch * steps_per_epoch + start_step

    for epoch in range(start_epoch, config.epochs):
        order = np.random.default_rng([config.seed, epoch]).permutation(images.shape[0])
        first = start_step if epoch == start_epoch else 0
        losses = _run_epoch(
            accelerator, model, optimizer, images, labels, order, config,
            epoch=epoch, first_step=first, steps_per_epoch=steps_per_epoch,
            checkpoint_dir=checkpoint_dir, regularizer=regularizer,
            embedding_layer=embedding_layer, input_transform=input_transform,
            progress=progress and accelerator.is_main_process, history=history,
        )
        mean_loss = float(np.mean(losses)) if losses else None
        if mean_loss is not None and accelerator.num_processes > 1:
            # Each process has the loss of its share of every batch; the
            # history records their mean, the same on every process.
            local = torch.tensor(mean_loss, dtype=torch.float64, device=accelerator.device)
            mean_loss = float(accelerator.reduce(local, reduction="mean").item())
        history.append({"epoch": epoch, "loss": mean_loss})
        if accelerator.is_main_process:
            logger.info("epoch %d/%d: mean loss %.4f", epoch + 1, config.epochs, mean_loss or float("nan"))
        if log_with and mean_loss is not None:
            accelerator.log({"train/loss": mean_loss}, step=epoch)
        _save_checkpoint(checkpoint_dir, accelerator, model, optimizer, epoch + 1, 0, history)

    if log_with:
        accelerator.end_training()
    result.history = history
    # prepare() trains the caller's module in place (DDP wraps it without copying).
    accelerator.wait_for_everyone()
    return result


def _reset_accelerator_state() -> None:
    """Let one process create Accelerators with different precisions, one after another.

    Accelerate keeps its settings in a process-wide singleton and rejects a
    second Accelerator with another ``mixed_precision``. The distributed
    state (process group, ranks) is kept.
    """
    from accelerate.state import AcceleratorState

    # NOTE: a private Accelerate API (accelerate 1.x); kept to one call here.
    AcceleratorState._reset_state(reset_partial_state=False)


def _steps_per_epoch(n_samples: int, batch_size: int, num_processes: int) -> int:
    full, rest = divmod(n_samples, batch_size)
    # A last batch smaller than the number of processes would leave one empty.
    return full + (1 if rest >= num_processes else 0)


def _run_epoch(accelerator, model, optimizer, images, labels, order, config, *, epoch,
               first_step, steps_per_epoch, checkpoint_dir, regularizer, embedding_layer,
               input_transform, progress, history):
    from mitigate.extract import LayerCapture

    model.train()
    losses = []
    capture = None
    if regularizer is not None:
        if embedding_layer is None:
            raise ValueError("a regularizer needs embedding_layer, the layer whose output it penalises")
        capture = LayerCapture(accelerator.unwrap_model(model), embedding_layer, keep_graph=True)
        capture.__enter__()
    try:
        steps = range(first_step, steps_per_epoch)
        for step in progress_bar(steps, desc=f"train epoch {epoch + 1}", enabled=progress):
            batch_rows = order[step * config.batch_size:(step + 1) * config.batch_size]
            local = np.sort(batch_rows[accelerator.process_index::accelerator.num_processes])
            x = torch.from_numpy(images[local]).to(accelerator.device)
            y = torch.from_numpy(labels[local]).to(accelerator.device)
            if input_transform is not None:
                x = input_transform(x)

            with accelerator.autocast():
                logits = model(x)
                loss = nn.functional.cross_entropy(logits.float(), y)
                if capture is not None:
                    global_step = epoch * steps_per_epoch + step
                    loss = loss + regularizer(capture.pop().float(), logits.float(), y, global_step, local)

            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            losses.append(loss.item())

            if config.checkpoint_every and (step + 1) % config.checkpoint_every == 0 \
                    and step + 1 < steps_per_epoch:
                _save_checkpoint(checkpoint_dir, accelerator, model, optimizer, epoch, step + 1, history)
    finally:
        if capture is not None:
            capture.__exit__(None, None, None)
    return losses


def _save_checkpoint(checkpoint_dir, accelerator, model, optimizer, epoch, step, history):
    if checkpoint_dir is None:
        return
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    state = {
        "model": accelerator.unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "step": step,
        "history": list(history),
    }
    with atomic_path(Path(checkpoint_dir) / CHECKPOINT_NAME) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(checkpoint_dir):
    if checkpoint_dir is None:
        return None
    path = Path(checkpoint_dir) / CHECKPOINT_NAME
    if not path.is_file():
        return None
    # weights_only: a checkpoint is loaded as tensors and plain containers,
    # never by unpickling arbitrary objects.
    return torch.load(path, map_location="cpu", weights_only=True)


def _maybe_resume(checkpoint_dir, accelerator, model, optimizer):
    state = _load_checkpoint(checkpoint_dir)
    if state is None:
        return 0, 0, []
    accelerator.unwrap_model(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if accelerator.is_main_process:
        logger.info("resuming training from %s at epoch %d, step %d",
                    checkpoint_dir, state["epoch"] + 1, state["step"])
    return int(state["epoch"]), int(state["step"]), list(state["history"])
