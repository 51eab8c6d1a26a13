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
IMPLEMENTED_REMEDIES = ("counterfactual_augmentation",)


@dataclass
class RemedyChoice:
    """The chosen remedy, why, and the alternatives with why they were not chosen."""

    remedy: str | None
    reason: str
    alternatives: list = field(default_factory=list)


def choose_remedy(cause: str, *, forced: str | None = None) -> RemedyChoice:
    """Pick the remedy for ``cause`` from REMEDY_TABLE, or honour ``forced``."""
    known = sorted({remedy for remedy, _ in REMEDY_TABLE.values()})
    if forced is not None and forced != "auto":
        if forced not in known:
            raise ValueError(f"unknown remedy {forced!r}; expected 'auto' or one of {known}")
        alternatives = [{"remedy": r, "why_not": "a remedy was forced by the recipe"}
                        for r in known if r != forced]
        return RemedyChoice(forced, f"forced by the recipe (diagnosed cause: {cause})", alternatives)
    if cause not in REMEDY_TABLE:
        return RemedyChoice(None, f"no remedy is defined for cause {cause!r}", [])
    remedy, reason = REMEDY_TABLE[cause]
    alternatives = [
        {"remedy": other, "why_not": f"it addresses {other_cause.replace('_', ' ')}, not {cause.replace('_', ' ')}"}
        for other_cause, (other, _) in REMEDY_TABLE.items() if other != remedy
    ]
    return RemedyChoice(remedy, reason, alternatives)


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
