"""Remedy selection by root cause, and the image remedies themselves."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from mitigate.probes import feature_presence, fill_box

logger = logging.getLogger(__name__)

# Root cause -> (remedy, why). The report quotes the reason.
REMEDY_TABLE = {
    "spurious_correlation": (
        "counterfactual_augmentation",
        "a located input feature pulls inputs of several classes together; pasting it onto "
        "training images of every class and removing it from the class it was correlated "
        "with makes it carry no label information",
    ),
    "representational_collapse": (
        "uniformity_loss",
        "the embeddings occupy too few directions; a uniformity loss spreads them",
    ),
    "gradient_starvation": (
        "spectral_decoupling",
        "an easy feature starves the others; spectral decoupling penalises the logits that "
        "the easy feature inflates",
    ),
    "data_artifact": (
        "artifact_stripping",
        "a fixed pattern marks a subset of the data; removing it at training and inference "
        "takes away the cue",
    ),
}
# Remedies that retrain with a loss from the `losses` package added to the
# cross-entropy, and the other remedies that `mitigate run` can apply.
REGULARIZER_REMEDIES = ("uniformity_loss", "vicreg_terms", "spectral_decoupling", "collapse_penalty")
IMPLEMENTED_REMEDIES = ("counterfactual_augmentation", "wider_bottleneck", "artifact_stripping",
                        *REGULARIZER_REMEDIES)


@dataclass
class RemedyChoice:
    """The chosen remedy, why, and the alternatives with why they were not chosen."""

    remedy: str | None
    reason: str
    alternatives: list = field(default_factory=list)


def choose_remedy(cause: str, *, forced: str | None = None, embedding_width: int | None = None,
                  n_classes: int | None = None, feature_located: bool = False) -> RemedyChoice:
    """Pick the remedy for ``cause`` from REMEDY_TABLE, or honour ``forced``.

    Two causes have a second remedy that the evidence can select:

    - representational collapse in an embedding layer narrower than
      ``n_classes - 1`` units gets ``wider_bottleneck``: no loss can hold
      the classes apart in fewer directions than they need, and a
      uniformity loss on such a layer can push every embedding to zero;
    - gradient starvation whose easy feature was located in the input
      (``feature_located``) gets ``counterfactual_augmentation`` of that
      region, which removes the shortcut from the data instead of damping
      it in the logits (in the "swap" form, see :func:`augmentation_mode`).

    Parameters
    ----------
    cause : str
        The diagnosed root cause.
    forced : str, optional
        ``[remedy] method`` of the recipe; anything but None or "auto" is used as it is.
    embedding_width : int, optional
        Width of the embedding layer (columns of the extracted embeddings).
    n_classes : int, optional
        Number of classes the model separates.
    feature_located : bool
        True when a probe located the feature that pulls members in.
    """
    known = sorted(IMPLEMENTED_REMEDIES)
    if forced is not None and forced != "auto":
        if forced not in known:
            raise ValueError(f"unknown remedy {forced!r}; expected 'auto' or one of {known}")
        alternatives = [{"remedy": r, "why_not": "a remedy was forced by the recipe"}
                        for r in known if r != forced]
        return RemedyChoice(forced, f"forced by the recipe (diagnosed cause: {cause})", alternatives)
    if cause not in REMEDY_TABLE:
        return RemedyChoice(None, f"no remedy is defined for cause {cause!r}", [])
    remedy, reason = REMEDY_TABLE[cause]
    if cause == "representational_collapse" and embedding_width is not None and n_classes is not None \
            and embedding_width < n_classes - 1:
        remedy = "wider_bottleneck"
        reason = (f"the embedding layer has {embedding_width} units, fewer than the {n_classes - 1} "
                  f"directions that {n_classes} classes need; widening it gives the classes room")
    elif cause == "gradient_starvation" and feature_located:
        remedy = "counterfactual_augmentation"
        reason = ("the easy feature that starves the others was located in the input; swapping "
                  "that region's content between random training images makes whatever it holds "
                  "carry no label information")
    alternatives = [
        {"remedy": other, "why_not": f"it addresses {other_cause.replace('_', ' ')}, not {cause.replace('_', ' ')}"}
        for other_cause, (other, _) in REMEDY_TABLE.items() if other != remedy
    ]
    return RemedyChoice(remedy, reason, alternatives)


AUGMENTATION_MODES = ("paste", "swap")


def augmentation_mode(cause: str, setting: str = "auto") -> str:
    """Return the form of counterfactual augmentation for ``cause``.

    "paste" removes the located feature where it is present and pastes it
    onto a random share of all images (:func:`counterfactual_augment_images`):
    right for a spurious correlation, where one feature is tied to one class.
    "swap" exchanges the region's content between random images
    (:func:`swap_region_images`): right for gradient starvation, where the
    region contains a different code for every class, so removing only the
    members' code would leave the other codes giving their labels.
    ``setting`` is ``[remedy] augmentation``; anything but "auto" is used as it is.
    """
    if setting != "auto":
        if setting not in AUGMENTATION_MODES:
            raise ValueError(f"unknown augmentation {setting!r}; expected 'auto' or one of "
                             f"{list(AUGMENTATION_MODES)}")
        return setting
    return "swap" if cause == "gradient_starvation" else "paste"


def swap_region_images(images: np.ndarray, *, box: tuple, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Give every image the content of ``box`` from a random other image.

    The region's content is permuted across the whole training set, so it
    keeps its distribution (every code still appears, as often as before)
    but no longer depends on the image's label. The rest of each image is
    untouched.

    Returns
    -------
    images : ndarray, an augmented copy
    stats : dict with the number of images whose region was swapped
    """
    top, left, height, width = box
    rng = np.random.default_rng(seed)
    order = rng.permutation(images.shape[0])
    result = images.copy()
    result[..., top:top + height, left:left + width] = images[order][..., top:top + height, left:left + width]
    stats = {"swapped": int(np.sum(order != np.arange(order.size))), "n_images": int(images.shape[0])}
    logger.info("counterfactual augmentation: swapped the region %s between %d images",
                list(box), stats["swapped"])
    return result, stats


def counterfactual_augment_images(
    images: np.ndarray,
    *,
    box: tuple,
    patch: np.ndarray,
    paste_rate: float = 0.5,
    fill: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, dict]:
    """Break the link between a located feature and the labels in training images.

    Every image that carries the feature (see
    :func:`mitigate.probes.feature_presence`) has it removed, then the
    feature is pasted onto a random ``paste_rate`` share of all images, so
    that it appears at the same rate in every class.

    Returns
    -------
    images : ndarray, an augmented copy
    stats : dict with the counts removed and pasted
    """
    rng = np.random.default_rng(seed)
    present = feature_presence(images, box, patch, fill=fill)
    result = images.copy()
    result[present] = fill_box(images[present], box, fill)
    pasted = rng.random(images.shape[0]) < paste_rate
    result[pasted] = fill_box(result[pasted], box, patch)
    stats = {"removed": int(present.sum()), "pasted": int(pasted.sum()), "n_images": int(images.shape[0])}
    logger.info("counterfactual augmentation: removed the feature from %d images, pasted it on %d",
                stats["removed"], stats["pasted"])
    return result, stats


def build_regularizer(remedy: str, *, weight: float, warmup_steps: int = 0, train_members=None):
    """Return ``regularizer(embeddings, logits, labels, step, rows) -> loss`` for a loss remedy.

    Parameters
    ----------
    remedy : str
        One of ``REGULARIZER_REMEDIES``.
    weight : float
        Multiplier of the loss term added to the cross-entropy.
    warmup_steps : int
        Spectral decoupling only: steps before the penalty applies.
    train_members : ndarray of bool, shape (n_train,), optional
        Collapse penalty only: training rows that the detector assigns to the
        attractor.
    """
    import torch

    from losses import CollapsePenalty, CovarianceLoss, SpectralDecouplingLoss, UniformityLoss, VarianceLoss

    if remedy == "uniformity_loss":
        loss = UniformityLoss()
        return lambda embeddings, logits, labels, step, rows: weight * loss(embeddings)
    if remedy == "vicreg_terms":
        variance, covariance = VarianceLoss(), CovarianceLoss()
        return lambda embeddings, logits, labels, step, rows: weight * (
            variance(embeddings) + covariance(embeddings))
    if remedy == "spectral_decoupling":
        # The module's own weight is 1 so that the recipe's weight is the only one.
        loss = SpectralDecouplingLoss(weight=1.0, warmup_steps=warmup_steps)
        return lambda embeddings, logits, labels, step, rows: weight * loss(logits, step=step)
    if remedy == "collapse_penalty":
        if train_members is None:
            raise ValueError("collapse_penalty needs the training rows assigned to the attractor")
        penalty = CollapsePenalty()
        members = torch.from_numpy(np.asarray(train_members, dtype=bool))

        def collapse(embeddings, logits, labels, step, rows):
            mask = members[torch.from_numpy(rows)].to(embeddings.device)
            if mask.sum() < 2 or (~mask).sum() < 1:
                return embeddings.sum() * 0.0
            return weight * penalty(embeddings, mask)
        return collapse
    raise ValueError(f"{remedy!r} is not a loss remedy; expected one of {REGULARIZER_REMEDIES}")


@dataclass
class ArtifactStripper:
    """A preprocessing transform that removes a located artifact, for training and inference.

    ``kind="mask"`` fills ``box`` with ``fill`` in every image.
    ``kind="pattern"`` subtracts from every image its projection on a fixed
    ``pattern`` (shape (C, H, W)) when the projection is positive, which
    removes an additive watermark or noise pattern of any strength.
    ``kind="pixels"`` fills with ``fill``, in every image, the pixels where
    ``pattern`` (then a 0/1 mask of shape (C, H, W)) is 1. Where an added
    pattern was clipped at the pixel range, subtraction leaves a trace, and
    a retrained model finds it again. Filling the pixels in every image
    leaves none, at the cost of their content.
    """

    kind: str
    box: tuple | None = None
    fill: float = 0.0
    pattern: np.ndarray | None = None

    def __call__(self, images):
        """Apply to a torch tensor or numpy array of shape (n, C, H, W)."""
        import torch

        is_tensor = isinstance(images, torch.Tensor)
        array = images.detach().cpu().numpy() if is_tensor else np.asarray(images)
        if self.kind == "mask":
            result = fill_box(array, self.box, self.fill)
        elif self.kind == "pattern":
            flat_pattern = self.pattern.reshape(-1).astype(np.float32)
            norm = float(flat_pattern @ flat_pattern)
            coefficient = np.clip(array.reshape(len(array), -1) @ flat_pattern / max(norm, 1e-12), 0, None)
            result = array - coefficient[:, None, None, None] * self.pattern[None].astype(np.float32)
        elif self.kind == "pixels":
            result = np.where(self.pattern[None].astype(bool), np.float32(self.fill), array)
        else:
            raise ValueError(
                f"invalid artifact stripper kind {self.kind!r}; expected 'mask', 'pattern' or 'pixels'")
        result = result.astype(np.float32)
        return torch.from_numpy(result).to(images.device) if is_tensor else result

    def save(self, path) -> None:
        """Save next to the model weights as safetensors plus JSON, so inference can reload it."""
        import json

        import torch

        from mitigate.files import save_weights, write_text

        tensors = {"pattern": torch.from_numpy(np.asarray(self.pattern, dtype=np.float32))} \
            if self.pattern is not None else {"empty": torch.zeros(1)}
        save_weights(f"{path}.safetensors", tensors)
        write_text(f"{path}.json", json.dumps({"kind": self.kind, "box": self.box, "fill": self.fill}))

    @classmethod
    def load(cls, path) -> "ArtifactStripper":
        """Load a stripper saved by :meth:`save`."""
        import json
        from pathlib import Path

        from mitigate.files import load_weights

        settings = json.loads(Path(f"{path}.json").read_text())
        tensors = load_weights(f"{path}.safetensors")
        pattern = tensors["pattern"].numpy() if "pattern" in tensors else None
        box = tuple(settings["box"]) if settings["box"] is not None else None
        return cls(kind=settings["kind"], box=box, fill=settings["fill"], pattern=pattern)


def derive_stripper(probe, member_images: np.ndarray, other_images: np.ndarray, *,
                    image_area: int, fill: float = 0.0, localized_area: float = 0.25) -> ArtifactStripper:
    """Build the stripper from probe evidence: mask a small region, else the pattern's pixels.

    A causal located region (``probe.causal``) covering at most
    ``localized_area`` of the image is masked. Otherwise (a larger region, or
    a diagnosis that rests on the pattern probe) the artifact is treated as
    a diffuse pattern, estimated as the
    difference between the members' mean image and the other inputs' mean.
    The pixels where that difference reaches half its largest magnitude are
    then filled in every image (``kind="pixels"``).
    """
    if probe is not None and probe.causal and probe.box[2] * probe.box[3] <= localized_area * image_area:
        return ArtifactStripper(kind="mask", box=tuple(int(v) for v in probe.box), fill=fill)
    difference = np.abs(member_images.mean(axis=0) - other_images.mean(axis=0))
    mask = difference >= 0.5 * difference.max() if difference.max() > 0 else np.zeros_like(difference, bool)
    return ArtifactStripper(kind="pixels", pattern=mask.astype(np.float32), fill=fill)
