"""Planted attractor benchmarks on Fashion-MNIST, one per root cause, plus a clean control.

Each benchmark changes the training and audit images (or the model) so that a
:class:`mitigate.models.SmallCNN` trained the way ``mitigate run`` trains it
(:func:`mitigate.train.train_classifier`, one or two epochs, embeddings from
the ``penultimate`` layer) forms one attractor whose member set is known. The
ground truth is kept in :attr:`PlantedBenchmark.truth` for evaluation; the
detector, the probes and the diagnosis never see it.

The mechanisms and why each forms an attractor:

``spurious_correlation``
    A bright 4x4 square in the top-right corner is on 99% of the training
    images of one class and on none of the others (``p_other``), so "square
    means that class" is the cheapest rule the model can learn. In the audit
    split the square is on a fixed share of every class (``p_audit``),
    independent of the label. The member set is every audit image that
    carries the square.
``representational_collapse``
    The penultimate layer is 3 units wide (``embedding_dim=3``), too narrow
    to hold 10 classes apart. With a ReLU after it, the optimiser drives many
    inputs of several classes to the point where every unit is zero, and the
    classifier can give them only one output. The member set is the audit rows
    that the trained model maps to that all-zero embedding: it depends on the
    trained weights, so it is filled in by :meth:`PlantedBenchmark.resolve_truth`
    from the audit embeddings (an exact test, not the detector). How much
    collapses depends on the training seed: from a few hundred rows to all
    of them.
``gradient_starvation``
    A 6x6 code in the top-left corner (a 3x3 grid of 2x2 cells) gives the
    label: one fixed binary pattern per class, on 98% of training images,
    always their own class's (the others carry no code). The code is learned
    within the first few hundred steps, long before the garment shapes, and
    the small remaining loss starves the shape features. In the audit split
    the code agrees with the label, except on 80% of the rows of four
    classes (``stuck_classes``), where it is stuck at one class's pattern.
    The member set is the stuck rows whose label differs from the stuck
    code.
``data_artifact``
    One "site" adds a fixed sparse noise pattern over the whole image. In
    training the site contributes 90% of one class's images and none of the
    others' (``site_share_of_others``), so its label prevalence differs
    sharply from the other sites and the pattern predicts that class. In the
    audit split the site sends a fixed share of every class. The member set
    is the site's audit rows.
``clean``
    The same data and model with nothing planted: a null control on which no
    attractor should be flagged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np

from mitigate.data import ImageSplits, square_box

logger = logging.getLogger(__name__)

MECHANISMS = (
    "spurious_correlation",
    "representational_collapse",
    "gradient_starvation",
    "data_artifact",
    "clean",
)

# Default options per mechanism; make_benchmark accepts any of them as a
# keyword. Shares are fractions of images; intensities are in [0, 1].
DEFAULTS = {
    "spurious_correlation": {
        "target_class": 0, "size": 4, "corner": "top_right", "intensity": 1.0,
        "p_target": 0.99, "p_other": 0.0, "p_audit": 0.3,
    },
    "representational_collapse": {"embedding_dim": 3},
    "gradient_starvation": {
        "grid": 3, "cell": 2, "agreement": 0.98, "stuck_class": 0, "stuck_share": 0.8,
        "stuck_classes": (2, 3, 4, 6), "min_distance": 3,
    },
    "data_artifact": {
        "site_class": 8, "site_share_of_class": 0.9, "site_share_of_others": 0.0,
        "audit_site_share": 0.3, "density": 0.3, "amplitude": 0.8,
    },
    "clean": {},
}


@dataclass
class PlantedBenchmark:
    """One planted benchmark: the images, the ground truth and the training settings.

    Attributes
    ----------
    mechanism : str
        One of :data:`MECHANISMS`.
    train_images : ndarray of shape (n_train, 1, H, W), float32 in [0, 1]
    train_labels : ndarray of shape (n_train,), int64
    audit_images : ndarray of shape (n_audit, 1, H, W), float32 in [0, 1]
    audit_labels : ndarray of shape (n_audit,), int64
    truth : ndarray of shape (n_audit,) of bool, or None
        The planted member set. None for ``clean``, and for
        ``representational_collapse`` until :meth:`resolve_truth` has seen the
        trained model's audit embeddings.
    groups : ndarray of shape (n_audit,), int64
        Group id per audit row for worst-group accuracy: ``2 * class + member``
        (``2 * class`` for the clean control).
    description : str
        What was planted, in one or two sentences.
    model_kwargs : dict
        Keyword arguments for :class:`mitigate.models.SmallCNN`.
    train_overrides : dict
        Fields of :class:`mitigate.train.TrainConfig` that the mechanism sets.
    extra : dict
        Mechanism-specific details: the planted box or pattern, the code
        patterns, the site membership of training rows, and so on.
    """

    mechanism: str
    train_images: np.ndarray
    train_labels: np.ndarray
    audit_images: np.ndarray
    audit_labels: np.ndarray
    truth: np.ndarray | None
    groups: np.ndarray
    description: str
    model_kwargs: dict = field(default_factory=dict)
    train_overrides: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def resolve_truth(self, audit_embeddings: np.ndarray) -> np.ndarray | None:
        """Fill in the member set that depends on the trained model, and return the truth.

        Only ``representational_collapse`` needs this: its members are the
        audit rows whose embedding is exactly zero in every unit (see
        :func:`dead_zone_rows`). For the other mechanisms the planted truth
        is returned unchanged.

        Parameters
        ----------
        audit_embeddings : ndarray of shape (n_audit, n_dims)
            The trained model's penultimate embeddings of ``audit_images``.
        """
        if self.mechanism != "representational_collapse":
            return self.truth
        embeddings = np.asarray(audit_embeddings)
        if embeddings.shape[0] != self.audit_labels.shape[0]:
            raise ValueError(
                f"audit_embeddings has {embeddings.shape[0]} rows but the benchmark has "
                f"{self.audit_labels.shape[0]} audit images; embed benchmark.audit_images"
            )
        self.truth = dead_zone_rows(embeddings)
        self.groups = _member_groups(self.audit_labels, self.truth)
        return self.truth


def dead_zone_rows(embeddings: np.ndarray) -> np.ndarray:
    """Return a bool per row: is every unit of the embedding exactly zero?

    After a ReLU, all-zero rows are one point of the embedding space whatever
    the input, so the classifier gives all of them the same output.
    """
    return np.all(np.asarray(embeddings) == 0, axis=1)


def subsample_splits(splits: ImageSplits, *, n_train: int | None, n_audit: int | None,
                     seed: int) -> ImageSplits:
    """Return a copy of ``splits`` with a seeded random subset of each split.

    None (or a number at least the split's size) keeps the whole split.
    Rows keep their original order.
    """
    rng = np.random.default_rng([seed, 7])
    train = _subset(splits.train_labels.shape[0], n_train, rng)
    audit = _subset(splits.audit_labels.shape[0], n_audit, rng)
    return replace(
        splits,
        train_images=splits.train_images[train], train_labels=splits.train_labels[train],
        audit_images=splits.audit_images[audit], audit_labels=splits.audit_labels[audit],
    )


def make_benchmark(mechanism: str, splits: ImageSplits, *, seed: int, **options) -> PlantedBenchmark:
    """Plant ``mechanism`` into ``splits`` and return the benchmark.

    Parameters
    ----------
    mechanism : str
        One of :data:`MECHANISMS`.
    splits : ImageSplits
        Fashion-MNIST (or a subset from :func:`subsample_splits`), images of
        shape (n, 1, 28, 28). The class options assume 10 classes.
    seed : int
        Seeds every random choice of the plant (which rows carry the feature,
        the code patterns, the site pattern).
    **options
        Overrides of the mechanism's entries in :data:`DEFAULTS`.

    Raises
    ------
    ValueError
        If ``mechanism`` is unknown, an option does not belong to it, or a
        class option is outside the labels.
    """
    if mechanism not in MECHANISMS:
        raise ValueError(f"invalid mechanism {mechanism!r}; expected one of {MECHANISMS}")
    unknown = sorted(set(options) - set(DEFAULTS[mechanism]))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for mechanism {mechanism!r}; "
            f"allowed: {sorted(DEFAULTS[mechanism])}"
        )
    settings = {**DEFAULTS[mechanism], **options}
    n_classes = len(splits.class_names)
    for key in ("target_class", "stuck_class", "site_class"):
        if key in settings and not 0 <= int(settings[key]) < n_classes:
            raise ValueError(f"{key}={settings[key]} is outside the {n_classes} classes (0..{n_classes - 1})")

    planter = {
        "spurious_correlation": _plant_spurious,
        "representational_collapse": _plant_collapse,
        "gradient_starvation": _plant_starvation,
        "data_artifact": _plant_artifact,
        "clean": _plant_clean,
    }[mechanism]
    benchmark = planter(splits, np.random.default_rng([seed, MECHANISMS.index(mechanism)]), settings)
    benchmark.extra["settings"] = settings
    logger.info("planted %s: %s", mechanism, benchmark.description)
    return benchmark


# -- the mechanisms ------------------------------------------------------------


def _plant_clean(splits, rng, settings) -> PlantedBenchmark:
    return _benchmark(
        "clean", splits, splits.train_images, splits.audit_images, truth=None,
        description="nothing planted: the unchanged images and the default SmallCNN",
    )


def _plant_spurious(splits, rng, settings) -> PlantedBenchmark:
    side = splits.train_images.shape[-1]
    box = square_box(side, size=settings["size"], corner=settings["corner"])
    target = int(settings["target_class"])
    rates = np.where(splits.train_labels == target, settings["p_target"], settings["p_other"])
    on_train = rng.random(rates.shape[0]) < rates
    on_audit = rng.random(splits.audit_labels.shape[0]) < settings["p_audit"]
    train = _paint(splits.train_images, on_train, box, settings["intensity"])
    audit = _paint(splits.audit_images, on_audit, box, settings["intensity"])
    name = splits.class_names[target]
    description = (
        f"a {settings['size']}x{settings['size']} square at the {settings['corner'].replace('_', ' ')} "
        f"corner on {settings['p_target']:.0%} of training images of {name!r} and "
        f"{settings['p_other']:.1%} of the others; on {settings['p_audit']:.0%} of audit images "
        "of every class (the member set)"
    )
    return _benchmark(
        "spurious_correlation", splits, train, audit, truth=on_audit, description=description,
        extra={"box": box, "target_class": target, "train_carries": on_train},
    )


def _plant_collapse(splits, rng, settings) -> PlantedBenchmark:
    width = int(settings["embedding_dim"])
    if width < 1:
        raise ValueError(f"embedding_dim must be at least 1, got {width}")
    description = (
        f"a {width}-unit penultimate layer (ReLU) for {len(splits.class_names)} classes; the member "
        "set is the audit rows the trained model maps to the all-zero embedding"
    )
    return _benchmark(
        "representational_collapse", splits, splits.train_images, splits.audit_images, truth=None,
        description=description, model_kwargs={"embedding_dim": width},
    )


def _plant_starvation(splits, rng, settings) -> PlantedBenchmark:
    n_classes = len(splits.class_names)
    grid, cell = int(settings["grid"]), int(settings["cell"])
    codes = code_patterns(n_classes, size=grid, min_distance=settings["min_distance"], rng=rng)
    codes = np.kron(codes, np.ones((cell, cell), dtype=np.float32))
    size = grid * cell
    box = (1, 1, size, size)

    # Training: the code of the label on `agreement` of the rows and no code on the rest, so
    # the code never contradicts the label and nothing forces the model to learn the shapes.
    train_codes = _codes_or_blank(splits.train_labels, settings["agreement"], rng)
    # Audit: agreeing codes, except a stuck share whose code is always `stuck_class`.
    stuck = (rng.random(splits.audit_labels.shape[0]) < settings["stuck_share"]) \
        & np.isin(splits.audit_labels, settings["stuck_classes"])
    audit_codes = np.where(stuck, int(settings["stuck_class"]), splits.audit_labels)
    train = _stamp_codes(splits.train_images, train_codes, codes, box)
    audit = _stamp_codes(splits.audit_images, audit_codes, codes, box)
    truth = audit_codes != splits.audit_labels

    stuck_name = splits.class_names[int(settings["stuck_class"])]
    description = (
        f"a {size}x{size} code at the top-left corner giving the label on {settings['agreement']:.0%} "
        f"of training images; in the audit split stuck at the code of {stuck_name!r} on "
        f"{settings['stuck_share']:.0%} of rows (the member set: stuck rows of other classes)"
    )
    return _benchmark(
        "gradient_starvation", splits, train, audit, truth=truth, description=description,
        extra={"box": box, "codes": codes, "train_codes": train_codes, "audit_codes": audit_codes,
               "stuck_class": int(settings["stuck_class"])},
    )


def _plant_artifact(splits, rng, settings) -> PlantedBenchmark:
    side = splits.train_images.shape[-1]
    pattern = (settings["amplitude"] * (rng.random((1, side, side)) < settings["density"])).astype(np.float32)
    site_class = int(settings["site_class"])
    rates = np.where(splits.train_labels == site_class, settings["site_share_of_class"],
                     settings["site_share_of_others"])
    site_train = rng.random(rates.shape[0]) < rates
    site_audit = rng.random(splits.audit_labels.shape[0]) < settings["audit_site_share"]
    train = _add_pattern(splits.train_images, site_train, pattern)
    audit = _add_pattern(splits.audit_images, site_audit, pattern)

    prevalence = float(np.mean(splits.train_labels[site_train] == site_class)) if site_train.any() else 0.0
    name = splits.class_names[site_class]
    description = (
        f"one site adds a fixed noise pattern ({settings['density']:.0%} of pixels, +{settings['amplitude']}); "
        f"in training {prevalence:.0%} of its images are {name!r}, in the audit split it sends "
        f"{settings['audit_site_share']:.0%} of every class (the member set)"
    )
    return _benchmark(
        "data_artifact", splits, train, audit, truth=site_audit, description=description,
        extra={"pattern": pattern, "site_class": site_class, "train_site": site_train},
    )


# -- helpers -------------------------------------------------------------------


def code_patterns(n_codes: int, *, size: int, min_distance: int, rng) -> np.ndarray:
    """Return ``n_codes`` distinct binary patterns of shape (size, size), float32.

    Patterns are drawn at random (each pixel on with probability 1/2) and
    kept when they differ from every kept pattern in at least
    ``min_distance`` pixels, so that no two codes are easily confused.
    """
    kept: list = []
    for _ in range(10_000):
        candidate = rng.random((size, size)) < 0.5
        if all(np.sum(candidate != other) >= min_distance for other in kept):
            kept.append(candidate)
            if len(kept) == n_codes:
                return np.asarray(kept, dtype=np.float32)
    raise ValueError(
        f"could not draw {n_codes} codes of {size}x{size} pixels at least {min_distance} pixels "
        "apart; lower min_distance or raise size"
    )


def _codes_or_blank(labels: np.ndarray, agreement: float, rng) -> np.ndarray:
    """Return the label on ``agreement`` of the rows and -1 (no code) on the others."""
    carries = rng.random(labels.shape[0]) < agreement
    return np.where(carries, labels, -1)


def _stamp_codes(images: np.ndarray, row_codes: np.ndarray, codes: np.ndarray, box) -> np.ndarray:
    """Write ``codes[row_codes]`` into ``box``; rows with code -1 keep their pixels."""
    top, left, height, width = box
    result = images.copy()
    rows = np.flatnonzero(row_codes >= 0)
    result[rows, 0, top:top + height, left:left + width] = codes[row_codes[rows]]
    return result


def _paint(images: np.ndarray, rows: np.ndarray, box, value: float) -> np.ndarray:
    top, left, height, width = box
    result = images.copy()
    result[rows, :, top:top + height, left:left + width] = value
    return result


def _add_pattern(images: np.ndarray, rows: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    result = images.copy()
    result[rows] = np.clip(result[rows] + pattern, 0.0, 1.0)
    return result


def _member_groups(labels: np.ndarray, truth: np.ndarray | None) -> np.ndarray:
    labels = np.asarray(labels, dtype=np.int64)
    if truth is None:
        return 2 * labels
    return 2 * labels + np.asarray(truth, dtype=np.int64)


def _benchmark(mechanism, splits, train_images, audit_images, *, truth, description,
               model_kwargs=None, extra=None) -> PlantedBenchmark:
    return PlantedBenchmark(
        mechanism=mechanism,
        train_images=train_images, train_labels=splits.train_labels,
        audit_images=audit_images, audit_labels=splits.audit_labels,
        truth=truth, groups=_member_groups(splits.audit_labels, truth),
        description=description, model_kwargs=dict(model_kwargs or {}),
        train_overrides={}, extra=dict(extra or {}),
    )


def _subset(n_rows: int, limit: int | None, rng) -> np.ndarray:
    if limit is None or limit >= n_rows:
        return np.arange(n_rows)
    return np.sort(rng.choice(n_rows, size=limit, replace=False))
