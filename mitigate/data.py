"""Image data: Fashion-MNIST from its IDX files, the digits fallback, planted features."""

from __future__ import annotations

import gzip
import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# Where Debian's dataset-fashion-mnist package installs the four IDX files.
DEFAULT_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


@dataclass
class ImageSplits:
    """Train and audit images, float32 in [0, 1], shape (n, 1, H, W)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    audit_images: np.ndarray
    audit_labels: np.ndarray
    class_names: tuple
    source: str


class DataNotFoundError(FileNotFoundError):
    """Raised when a data set is missing; the message says where it looked."""


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a uint8 array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        header = handle.read(4)
        if len(header) < 4 or header[0] != 0 or header[1] != 0 or header[2] != 0x08:
            raise ValueError(f"{path} is not an unsigned-byte IDX file (bad magic number {header!r})")
        n_dims = header[3]
        shape = struct.unpack(">" + "I" * n_dims, handle.read(4 * n_dims))
        data = np.frombuffer(handle.read(), dtype=np.uint8)
    expected = int(np.prod(shape))
    if data.size != expected:
        raise ValueError(f"{path} is truncated: {data.size} bytes of data, expected {expected}")
    return data.reshape(shape)


def find_fashion_files(data_dir: Path) -> dict[str, Path] | None:
    """Return the paths of the four IDX files in ``data_dir``, or None if any is missing."""
    found = {}
    for key, stem in FASHION_FILES.items():
        for candidate in (data_dir / stem, data_dir / f"{stem}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def load_fashion_mnist(data_dir: Path | str | None = None, *, fallback: bool = True) -> ImageSplits:
    """Load Fashion-MNIST (60,000 train and 10,000 test images) from IDX files.

    Parameters
    ----------
    data_dir : path, optional
        Folder with the four IDX files, plain or ``.gz``. Defaults to
        ``/usr/share/datasets/fashion-mnist`` (Debian's dataset-fashion-mnist).
    fallback : bool, default=True
        If the files are missing, log it and load scikit-learn's bundled
        digits data set (1,797 images of 8x8) instead.

    Raises
    ------
    DataNotFoundError
        If the files are missing and ``fallback`` is False.
    """
    folder = Path(data_dir) if data_dir is not None else DEFAULT_FASHION_DIR
    files = find_fashion_files(folder)
    if files is None:
        message = (
            f"Fashion-MNIST IDX files not found in {folder} (looked for "
            f"{', '.join(FASHION_FILES.values())}, plain or .gz). Install them with "
            "'apt-get install dataset-fashion-mnist', or point data.dir in the recipe "
            "(or --data-dir) at a folder that has them"
        )
        if not fallback:
            raise DataNotFoundError(message)
        logger.warning("%s. Falling back to scikit-learn's digits data set.", message)
        return load_digits_fallback()

    arrays = {key: read_idx(path) for key, path in files.items()}
    logger.info("loaded Fashion-MNIST from %s", folder)
    return ImageSplits(
        train_images=_to_float(arrays["train_images"]),
        train_labels=arrays["train_labels"].astype(np.int64),
        audit_images=_to_float(arrays["test_images"]),
        audit_labels=arrays["test_labels"].astype(np.int64),
        class_names=FASHION_CLASSES,
        source=f"fashion-mnist:{folder}",
    )


def load_digits_fallback(seed: int = 0) -> ImageSplits:
    """Load scikit-learn's digits (8x8 images, 10 classes), split 70/30 with a seed."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    order = np.random.default_rng(seed).permutation(images.shape[0])
    cut = int(0.7 * order.size)
    train, audit = order[:cut], order[cut:]
    return ImageSplits(
        train_images=images[train],
        train_labels=digits.target[train].astype(np.int64),
        audit_images=images[audit],
        audit_labels=digits.target[audit].astype(np.int64),
        class_names=tuple(str(d) for d in range(10)),
        source="sklearn-digits (fallback)",
    )


def _to_float(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.float32) / 255.0)[:, None]


# -- planted features ----------------------------------------------------------


def square_box(image_size: int, *, size: int, corner: str, margin: int = 1) -> tuple[int, int, int, int]:
    """Return ``(top, left, height, width)`` of a square patch in a corner."""
    if corner not in CORNERS:
        raise ValueError(f"invalid corner {corner!r}; expected one of {CORNERS}")
    if size + margin > image_size:
        raise ValueError(f"square of size {size} with margin {margin} does not fit a {image_size}px image")
    top = margin if corner.startswith("top") else image_size - margin - size
    left = margin if corner.endswith("left") else image_size - margin - size
    return top, left, size, size


def paste_box(images: np.ndarray, box, value) -> np.ndarray:
    """Return a copy of ``images`` with ``box`` set to ``value`` (a scalar or an (h, w) patch)."""
    top, left, height, width = box
    result = images.copy()
    result[..., top:top + height, left:left + width] = value
    return result


def plant_spurious_square(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    target_class: int,
    p_target: float,
    p_other: float,
    box,
    intensity: float = 1.0,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Paste a bright square on images at a class-dependent rate.

    Each image of ``target_class`` gets the square with probability
    ``p_target``, every other image with probability ``p_other``. Equal
    rates make the square independent of the class (the audit split).

    Returns
    -------
    images : ndarray, a modified copy
    has_square : ndarray of bool, the ground-truth marker (for evaluation only)
    """
    rng = np.random.default_rng(seed)
    rates = np.where(labels == target_class, p_target, p_other)
    has_square = rng.random(labels.shape[0]) < rates
    result = images.copy()
    top, left, height, width = box
    result[has_square, :, top:top + height, left:left + width] = intensity
    return result, has_square
