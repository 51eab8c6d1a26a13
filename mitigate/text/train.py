"""Fine-tuning of a text classifier with the toolkit's Accelerate loop.

Texts are tokenized once into a packed int64 array (see
:mod:`mitigate.text.model`), so :func:`mitigate.pipeline.build_and_train`
trains them exactly as it trains images: seeded batches, checkpoints,
resume, saved safetensors weights and ``training.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mitigate.recipe import Recipe

logger = logging.getLogger(__name__)


def text_model_factory(recipe: Recipe, n_classes: int, tokenizer):
    """Return a callable that builds the recipe's untrained text classifier."""
    from mitigate.text.model import build_text_model

    def build():
        return build_text_model(
            recipe["model"]["factory"], n_classes, vocab_size=len(tokenizer),
            head_pooling=recipe["text"]["head_pooling"], kwargs=recipe["model"]["kwargs"],
        )

    return build


def train_text_classifier(recipe: Recipe, packed: np.ndarray, labels: np.ndarray, *, tokenizer,
                          n_classes: int, weights_path: Path, checkpoint_dir: Path,
                          progress: bool, tracker_dir: Path | None):
    """Fine-tune a fresh text classifier, or load it if ``weights_path`` exists.

    Parameters
    ----------
    packed : ndarray of shape (n, 2, max_length), int64
        Token ids and attention masks from :func:`mitigate.text.model.encode_texts`.
    labels : ndarray of shape (n,), int64

    Returns
    -------
    model : TextClassifier
    info : dict
        Loss history, precision used and seconds, as written to ``training.json``.
    """
    from mitigate.pipeline import build_and_train

    return build_and_train(
        recipe, packed, labels, weights_path=weights_path, checkpoint_dir=checkpoint_dir,
        n_classes=n_classes, image_size=0, progress=progress, tracker_dir=tracker_dir,
        model_factory=text_model_factory(recipe, n_classes, tokenizer),
    )
