"""Built-in models and the loader for a user's model given as an import path."""

from __future__ import annotations

import importlib

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Small convolutional classifier for single-channel images.

    Two conv blocks, then a fully connected ``penultimate`` layer whose output
    is the default layer for embedding extraction, then a linear ``classifier``.

    Parameters
    ----------
    num_classes : int, default=10
        Number of output logits.
    embedding_dim : int, default=64
        Width of the ``penultimate`` layer, i.e. the embedding size. A narrow
        value (for example 2) is the built-in way to plant representational
        collapse.
    channels : tuple of int, default=(16, 32)
        Output channels of the two conv blocks.
    image_size : int, default=28
        Height and width of the square input images, in pixels.
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        embedding_dim: int = 64,
        channels: tuple[int, int] = (16, 32),
        image_size: int = 28,
    ):
        super().__init__()
        if image_size % 4 != 0:
            raise ValueError(
                f"image_size must be a multiple of 4 (two 2x2 poolings), got {image_size}"
            )
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        flat = c2 * (image_size // 4) ** 2
        self.penultimate = nn.Sequential(nn.Linear(flat, embedding_dim), nn.ReLU())
        self.classifier = nn.Linear(embedding_dim, num_classes)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Return the penultimate embeddings, shape (batch, embedding_dim)."""
        return self.penultimate(self.features(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return logits of shape (batch, num_classes) for images of shape (batch, 1, H, W)."""
        return self.classifier(self.embed(images))


def build_model(spec: str, kwargs: dict | None = None) -> nn.Module:
    """Build a model from ``"builtin:small_cnn"`` or a ``"package.module:factory"`` path.

    Parameters
    ----------
    spec : str
        ``"builtin:small_cnn"`` for :class:`SmallCNN`, or an import path to a
        callable that returns an ``nn.Module``.
    kwargs : dict, optional
        Keyword arguments passed to the factory.

    Raises
    ------
    ValueError
        If ``spec`` is not of the form ``module:callable`` or does not resolve
        to a callable that returns an ``nn.Module``.
    """
    kwargs = dict(kwargs or {})
    if spec == "builtin:small_cnn":
        return SmallCNN(**kwargs)

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(
            f"invalid model factory {spec!r}: use 'builtin:small_cnn' or "
            "'package.module:callable'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(
            f"model factory module {module_name!r} could not be imported ({err}); "
            "check that it is installed or on PYTHONPATH"
        ) from err
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"{attr!r} in module {module_name!r} is missing or not callable")
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"model factory {spec!r} returned {type(model).__name__}, expected a torch.nn.Module"
        )
    return model
