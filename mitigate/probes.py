"""Counterfactual image probes: locate what pulls inputs into a cluster, then test it.

Occlusion attribution: for each cell of a grid over the image, fill the cell
with the background value in every probed member and measure how far the
member's embedding moves away from the cluster centroid. The cells whose
occlusion moves members furthest locate the feature.

Counterfactual probes then test the located region causally:

- removal: fill the region in members with the background, and separately
  replace it with the region of random non-members; the *exit rate* is the
  larger share of members that the detector no longer assigns to the
  cluster;
- pasting: copy the members' mean region onto non-members; the *entry rate*
  is the share that the detector now assigns to the cluster;
- control: paste the same content at a mirrored location; the *control entry
  rate* should stay low if the location matters.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from mitigate.constants import NOISE_LABEL

logger = logging.getLogger(__name__)

# Thresholds for calling a region the cause of membership. Removal must move
# at least EXIT_RATE of members out. Pasting must move at least ENTRY_RATE of
# non-members in: this is lower because a feature may pull only some classes
# (Fashion-MNIST footwear resists a square that pulls every top-wear class),
# and the non-members are drawn from all other clusters. A control paste at
# the mirrored location must move fewer than CONTROL_LIMIT.
EXIT_RATE = 0.5
ENTRY_RATE = 0.25
CONTROL_LIMIT = 0.2

# Added to the members' per-pixel standard deviation in refine_box, in pixel
# units (images in [0, 1]), so that constant pixels do not divide by zero.
CONSISTENCY_FLOOR = 0.05
# Share of the largest consistency-weighted contrast that a pixel needs to
# stay in the refined box. In two runs of the planted code benchmark the code's
# cells scored 1.9 to 15 and the garment next to it at most 0.9.
CONSISTENT_KEEP = 0.25


def is_causal(exit_rate: float, entry_rate: float, control_rate: float) -> bool:
    """Return True when removal and insertion both move inputs and the control insertion does not."""
    return exit_rate >= EXIT_RATE and entry_rate >= ENTRY_RATE and control_rate < CONTROL_LIMIT


@dataclass
class ImageProbeResult:
    """Evidence from occlusion attribution and counterfactual probes on one cluster.

    Attributes
    ----------
    attribution : ndarray of shape (H, W)
        Per-pixel occlusion attribution (see :func:`occlusion_attribution`);
        higher means the pixel pulls members in more.
    box : tuple of int
        ``(top, left, height, width)`` in pixels of the located region.
    patch : ndarray of shape (channels, height, width)
        The members' mean pixels inside ``box``.
    localization : float
        Share of the positive attribution mass inside ``box``, in [0, 1].
    exit_rate, entry_rate, control_entry_rate : float
        See the module docstring; each in [0, 1].
    fill_exit_rate, swap_exit_rate : float or None
        The exit rate when the region is filled with the background, and
        when it gets the region of random non-members; ``exit_rate`` is the
        larger of the two.
    feature_clusters : list of int
        Other clusters whose members leave them when the region is filled,
        i.e. clusters that the same feature pulls together.
    """

    attribution: np.ndarray
    box: tuple
    patch: np.ndarray
    localization: float
    exit_rate: float
    entry_rate: float
    control_entry_rate: float
    n_members_probed: int
    n_nonmembers_probed: int
    fill_exit_rate: float | None = None
    swap_exit_rate: float | None = None
    feature_clusters: list = field(default_factory=list)
    feature_cluster_exit_rates: dict = field(default_factory=dict)
    examples: dict = field(default_factory=dict)

    @property
    def causal(self) -> bool:
        """True when removal and pasting both move inputs and the control does not."""
        return is_causal(self.exit_rate, self.entry_rate, self.control_entry_rate)

    def to_dict(self) -> dict:
        """Return the JSON-ready probe record used in report.json."""
        return {
            "kind": "image",
            "box": [int(v) for v in self.box],
            "localization": float(self.localization),
            "exit_rate": float(self.exit_rate),
            "fill_exit_rate": _optional_float(self.fill_exit_rate),
            "swap_exit_rate": _optional_float(self.swap_exit_rate),
            "entry_rate": float(self.entry_rate),
            "control_entry_rate": float(self.control_entry_rate),
            "n_members_probed": int(self.n_members_probed),
            "n_nonmembers_probed": int(self.n_nonmembers_probed),
            "feature_clusters": [int(c) for c in self.feature_clusters],
            "extended_member_count": None,
            "notes": [],
        }


def _optional_float(value) -> float | None:
    return None if value is None else float(value)


def occlusion_attribution(
    images: np.ndarray,
    centroid: np.ndarray,
    embed: Callable[[np.ndarray], np.ndarray],
    *,
    cell: int,
    fill: float = 0.0,
) -> np.ndarray:
    """Return a per-pixel map of how far occlusion moves members from the centroid.

    A square window of side ``cell`` slides with stride ``cell // 2``. For each
    position the window is filled with ``fill`` in every image, and the mean
    increase of the distance to ``centroid`` (relative to the mean distance
    before) is credited to every pixel under the window; each pixel's value
    is the mean over the windows that cover it.

    Parameters
    ----------
    images : ndarray of shape (n, C, H, W)
        The probed members.
    centroid : ndarray of shape (n_dims,)
        Centroid of the cluster in embedding space.
    embed : callable
        Maps images of shape (m, C, H, W) to embeddings of shape (m, n_dims).
    cell : int
        Side of the occlusion window, in pixels.
    fill : float
        Value written into the window (the image background).

    Returns
    -------
    ndarray of shape (H, W)
        Higher values mark pixels that pull members in more.
    """
    height, width = images.shape[-2:]
    stride = max(1, cell // 2)
    base = np.linalg.norm(embed(images) - centroid, axis=1)
    scale = max(float(base.mean()), 1e-12)
    total = np.zeros((height, width))
    covered = np.zeros((height, width))
    for top in _window_starts(height, cell, stride):
        for left in _window_starts(width, cell, stride):
            occluded = images.copy()
            occluded[..., top:top + cell, left:left + cell] = fill
            moved = np.linalg.norm(embed(occluded) - centroid, axis=1)
            total[top:top + cell, left:left + cell] += float((moved - base).mean()) / scale
            covered[top:top + cell, left:left + cell] += 1
    return total / np.maximum(covered, 1)


def _window_starts(size: int, window: int, stride: int) -> list:
    starts = list(range(0, max(size - window, 0) + 1, stride))
    if starts[-1] + window < size:
        starts.append(size - window)
    return starts


def locate_region(attribution: np.ndarray, *, keep: float = 0.5):
    """Return the bounding box of the strongest connected region, and its share of the mass.

    Pixels at or above ``keep`` times the peak form regions (8-connected);
    the one holding the peak is kept. Returns ``(box, localization)`` where
    ``box`` is ``(top, left, height, width)`` and ``localization`` is the
    share of the positive attribution mass inside the box, in [0, 1].
    """
    from scipy import ndimage

    peak_index = np.unravel_index(int(np.argmax(attribution)), attribution.shape)
    peak = attribution[peak_index]
    if peak <= 0:
        return (int(peak_index[0]), int(peak_index[1]), 1, 1), 0.0
    regions, _ = ndimage.label(attribution >= keep * peak, structure=np.ones((3, 3)))
    rows, cols = np.nonzero(regions == regions[peak_index])
    top, left = int(rows.min()), int(cols.min())
    box = (top, left, int(rows.max()) - top + 1, int(cols.max()) - left + 1)

    positive = np.clip(attribution, 0, None)
    inside = positive[top:top + box[2], left:left + box[3]].sum()
    return box, float(inside / positive.sum())


def refine_box(box: tuple, member_mean: np.ndarray, other_mean: np.ndarray, *, margin: int,
               member_std: np.ndarray | None = None) -> tuple:
    """Fit ``box`` to the pixels where members differ most from non-members.

    Occlusion windows are coarse, so the attributed box may cut a feature or
    overhang it. Within ``box`` grown by ``margin`` pixels, keep the bounding
    box of pixels whose contrast is at least half the largest contrast there.
    The contrast is the difference between the mean member and mean
    non-member values. With ``member_std`` it is divided by the members'
    standard deviation plus ``CONSISTENCY_FLOOR``, and the kept share drops
    to ``CONSISTENT_KEEP`` of the largest. A planted feature is nearly the
    same on every member, while the garment next to it varies, so the
    division keeps the box on the feature. Returns the original box when
    members and non-members do not differ in that area.
    """
    top, left, height, width = box
    rows, cols = member_mean.shape[-2:]
    r0, c0 = max(0, top - margin), max(0, left - margin)
    r1, c1 = min(rows, top + height + margin), min(cols, left + width + margin)
    difference = np.abs(member_mean - other_mean)
    if member_std is not None:
        difference = difference / (member_std + CONSISTENCY_FLOOR)
    contrast = difference.reshape(-1, rows, cols).max(axis=0)[r0:r1, c0:c1]
    peak = contrast.max()
    if peak <= 0:
        return box
    keep = 0.5 if member_std is None else CONSISTENT_KEEP
    hit_rows, hit_cols = np.nonzero(contrast >= keep * peak)
    new_top, new_left = r0 + int(hit_rows.min()), c0 + int(hit_cols.min())
    return (new_top, new_left, r0 + int(hit_rows.max()) + 1 - new_top, c0 + int(hit_cols.max()) + 1 - new_left)


def mirrored_box(box: tuple, image_shape: tuple) -> tuple:
    """Return the box reflected through the image centre (the control location)."""
    top, left, height, width = box
    rows, cols = image_shape
    return (rows - top - height, cols - left - width, height, width)


def fill_box(images: np.ndarray, box: tuple, value) -> np.ndarray:
    """Return a copy of ``images`` with ``box`` set to ``value`` (scalar or patch)."""
    top, left, height, width = box
    result = images.copy()
    result[..., top:top + height, left:left + width] = value
    return result


def probe_image_cluster(
    images: np.ndarray,
    cluster_ids: np.ndarray,
    attractor_ids: list,
    embeddings: np.ndarray,
    *,
    embed: Callable[[np.ndarray], np.ndarray],
    assign: Callable[[np.ndarray], np.ndarray],
    cell: int,
    fill: float = 0.0,
    max_probe: int = 200,
    labels: np.ndarray | None = None,
    seed: int = 0,
) -> ImageProbeResult:
    """Locate and test the feature that pulls inputs into the clusters ``attractor_ids``.

    Parameters
    ----------
    images : ndarray of shape (n, C, H, W)
        The audit inputs, in the rows the detector saw.
    cluster_ids : ndarray of shape (n,)
        The detector's cluster per row.
    attractor_ids : list of int
        The cluster(s) that make up the attractor.
    embeddings : ndarray of shape (n, n_dims)
        The audit embeddings (for the centroid).
    embed : callable
        Images to embeddings with the audited model and layer.
    assign : callable
        Embeddings to cluster ids, e.g. :meth:`AttractorDetector.assign`.
    cell : int
        Occlusion grid cell side, in pixels.
    max_probe : int
        Most members (and non-members) probed; a seeded sample above that.
    labels : ndarray of shape (n,), optional
        Classes of the rows. When given, pasting is tested on non-members of
        the classes that make up at least 5% of the members, because a
        feature may pull some classes and not others.
    """
    rng = np.random.default_rng(seed)
    inside = np.isin(cluster_ids, attractor_ids)
    member_rows = np.flatnonzero(inside)
    other_rows = np.flatnonzero(~inside & (cluster_ids != NOISE_LABEL))
    if labels is not None:
        classes, counts = np.unique(labels[member_rows], return_counts=True)
        captured = classes[counts >= 0.05 * member_rows.size]
        other_rows = other_rows[np.isin(labels[other_rows], captured)]
    members = _sample(member_rows, max_probe, rng)
    others = _sample(other_rows, max_probe, rng)
    centroid = embeddings[member_rows].mean(axis=0)

    attribution = occlusion_attribution(images[members], centroid, embed, cell=cell, fill=fill)
    box, localization = locate_region(attribution)
    member_images = images[member_rows]
    box = refine_box(box, member_images.mean(axis=0), images[other_rows].mean(axis=0)
                     if other_rows.size else np.zeros_like(images[0]), margin=cell,
                     member_std=member_images.std(axis=0))
    top, left, height, width = box
    patch = member_images[..., top:top + height, left:left + width].mean(axis=0)

    def share_inside(batch):
        return float(np.mean(np.isin(assign(embed(batch)), attractor_ids))) if len(batch) else 0.0

    # Removal two ways: fill the region with the background, or swap in the region of
    # random non-members. A code stamped on every image has no blank state, so only the swap removes it.
    # Donors whose region contains the members' feature would put it back, so they are left out.
    removed = fill_box(images[members], box, fill)
    fill_exit_rate = 1.0 - share_inside(removed)
    swap_exit_rate = 0.0
    donor_pool = other_rows[~feature_presence(images[other_rows], box, patch, fill=fill)] \
        if other_rows.size else other_rows
    if donor_pool.size:
        donors = rng.choice(donor_pool, size=members.size, replace=True)
        swapped = images[members].copy()
        swapped[..., top:top + height, left:left + width] = \
            images[donors][..., top:top + height, left:left + width]
        swap_exit_rate = 1.0 - share_inside(swapped)
    exit_rate = max(fill_exit_rate, swap_exit_rate)
    pasted = fill_box(images[others], box, patch)
    entry_rate = share_inside(pasted)
    control_rate = share_inside(fill_box(images[others], mirrored_box(box, images.shape[-2:]), patch))

    result = ImageProbeResult(
        attribution=attribution, box=box, patch=patch, localization=localization,
        exit_rate=exit_rate, entry_rate=entry_rate, control_entry_rate=control_rate,
        n_members_probed=int(members.size), n_nonmembers_probed=int(others.size),
        fill_exit_rate=fill_exit_rate, swap_exit_rate=swap_exit_rate,
    )
    result.examples = {
        "original": images[members[:6], 0],
        "removed": removed[:6, 0],
        "pasted": pasted[:6, 0],
    }
    logger.info(
        "probe clusters %s: box %s, localization %.2f, exit %.2f, entry %.2f, control %.2f",
        attractor_ids, box, localization, exit_rate, entry_rate, control_rate,
    )
    return result


def find_feature_clusters(
    images: np.ndarray,
    cluster_ids: np.ndarray,
    probe: ImageProbeResult,
    attractor_ids: list,
    *,
    embed: Callable,
    assign: Callable,
    fill: float = 0.0,
    max_probe: int = 100,
    seed: int = 0,
) -> None:
    """Record in ``probe`` the other clusters that the same region keeps together.

    A cluster joins when filling the region moves at least ``EXIT_RATE`` of
    its probed members out of it: its members share the feature, and the
    feature, not their content, keeps them there.
    """
    rng = np.random.default_rng(seed)
    for other in np.unique(cluster_ids):
        if other == NOISE_LABEL or other in attractor_ids:
            continue
        rows = _sample(np.flatnonzero(cluster_ids == other), max_probe, rng)
        removed = fill_box(images[rows], probe.box, fill)
        rate = float(np.mean(assign(embed(removed)) != other))
        probe.feature_cluster_exit_rates[int(other)] = rate
        if rate >= EXIT_RATE:
            probe.feature_clusters.append(int(other))


def feature_presence(images: np.ndarray, box: tuple, patch: np.ndarray, *, fill: float = 0.0) -> np.ndarray:
    """Return a bool per image: does ``box`` hold the located feature?

    An image carries the feature when its box content is closer to the
    members' mean patch than half the distance from a blank (``fill``) box
    to that patch. Used to find the feature in training data.
    """
    top, left, height, width = box
    region = images[..., top:top + height, left:left + width]
    distance = np.abs(region - patch).reshape(images.shape[0], -1).mean(axis=1)
    blank = float(np.abs(fill - patch).mean())
    return distance < 0.5 * blank


@dataclass
class PatternProbeResult:
    """Evidence that a fixed additive pattern, possibly spread over the whole image, pulls members in.

    Attributes
    ----------
    pattern : ndarray of shape (channels, H, W)
        The members' mean image minus the class-matched mean image of
        non-members (see :func:`probe_image_pattern`).
    spread : float
        Share of the image covered by the bounding box of the pattern's
        strong pixels (at least half its largest absolute value), in [0, 1].
        A localized feature covers a few percent; a noise pattern or
        watermark over the whole image about 1.
    exit_rate, entry_rate, control_entry_rate : float
        As for :class:`ImageProbeResult`, with subtraction and addition of
        the pattern in place of filling and pasting a region, and the control
        pattern of :func:`probe_image_pattern`. Each in [0, 1].
    """

    pattern: np.ndarray
    spread: float
    exit_rate: float
    entry_rate: float
    control_entry_rate: float
    n_members_probed: int
    n_nonmembers_probed: int

    @property
    def causal(self) -> bool:
        """True when removing and adding the pattern both move inputs and the rolled control does not."""
        return is_causal(self.exit_rate, self.entry_rate, self.control_entry_rate)

    def to_dict(self) -> dict:
        """Return a JSON-ready record of the scores (the pattern itself is left out)."""
        return {
            "kind": "image_pattern",
            "spread": float(self.spread),
            "exit_rate": float(self.exit_rate),
            "entry_rate": float(self.entry_rate),
            "control_entry_rate": float(self.control_entry_rate),
            "n_members_probed": int(self.n_members_probed),
            "n_nonmembers_probed": int(self.n_nonmembers_probed),
        }


def probe_image_pattern(
    images: np.ndarray,
    cluster_ids: np.ndarray,
    attractor_ids: list,
    labels: np.ndarray,
    *,
    embed: Callable[[np.ndarray], np.ndarray],
    assign: Callable[[np.ndarray], np.ndarray],
    max_probe: int = 200,
    low: float = 0.0,
    high: float = 1.0,
    seed: int = 0,
) -> PatternProbeResult:
    """Estimate the additive pattern that members share and test it causally.

    Occlusion finds a feature that sits in one region. A fixed noise pattern
    or watermark spread over the whole image escapes it, because filling one
    window leaves the rest of the pattern in place. This probe estimates the
    pattern directly: the members' mean image minus the mean image of the
    non-members of the same classes, weighted by the members' class shares,
    so that the garments cancel and what the members share beyond their
    classes remains.

    - removal: subtract the pattern from probed members (clipped to
      ``[low, high]``); the *exit rate* is the share that leave the clusters;
    - addition: add it to probed non-members of the captured classes (those
      with at least 5% of the members); the *entry rate* is the share that
      enter;
    - control: add the pattern rolled by half the image in both axes, with
      the pattern's own strong pixels zeroed: the same values at other
      places only. A random noise pattern overlaps a shifted copy of itself
      on a share of its pixels equal to its density, so without the zeroing
      the control would partly be the pattern itself. It should move few
      inputs in when the exact pattern matters.

    Parameters
    ----------
    images : ndarray of shape (n, C, H, W)
    cluster_ids : ndarray of shape (n,)
        The detector's cluster per row.
    attractor_ids : list of int
        The cluster(s) that make up the attractor.
    labels : ndarray of shape (n,)
        Classes of the rows (used only to match non-members to members).
    embed, assign : callable
        As in :func:`probe_image_cluster`.
    max_probe : int
        Most members (and non-members) probed; a seeded sample above that.
    low, high : float
        Pixel range that edited images are clipped to.
    """
    rng = np.random.default_rng(seed)
    inside = np.isin(cluster_ids, attractor_ids)
    member_rows = np.flatnonzero(inside)
    other_rows = np.flatnonzero(~inside & (cluster_ids != NOISE_LABEL))
    classes, counts = np.unique(labels[member_rows], return_counts=True)
    other_rows = other_rows[np.isin(labels[other_rows], classes[counts >= 0.05 * member_rows.size])]
    pattern = _class_matched_difference(images, labels, member_rows, other_rows)

    members = _sample(member_rows, max_probe, rng)
    others = _sample(other_rows, max_probe, rng)

    def share_inside(batch):
        return float(np.mean(np.isin(assign(embed(batch)), attractor_ids))) if len(batch) else 0.0

    exit_rate = 1.0 - share_inside(np.clip(images[members] - pattern, low, high))
    entry_rate = share_inside(np.clip(images[others] + pattern, low, high))
    rolled = np.roll(pattern, shift=(pattern.shape[-2] // 2, pattern.shape[-1] // 2), axis=(-2, -1))
    rolled = np.where(_strong_pixels(pattern), 0.0, rolled)
    control_rate = share_inside(np.clip(images[others] + rolled, low, high))

    result = PatternProbeResult(
        pattern=pattern, spread=pattern_spread(pattern), exit_rate=exit_rate, entry_rate=entry_rate,
        control_entry_rate=control_rate, n_members_probed=int(members.size),
        n_nonmembers_probed=int(others.size),
    )
    logger.info(
        "pattern probe clusters %s: spread %.2f, exit %.2f, entry %.2f, control %.2f",
        attractor_ids, result.spread, exit_rate, entry_rate, control_rate,
    )
    return result


def pattern_spread(pattern: np.ndarray) -> float:
    """Return the share of the image covered by the bounding box of the pattern's strong pixels.

    Strong pixels have an absolute value of at least half the largest one
    (over channels). Range [0, 1]; 0 for an all-zero pattern.
    """
    strong = _strong_pixels(pattern)
    if not strong.any():
        return 0.0
    rows, cols = np.nonzero(strong)
    area = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    return float(area / strong.size)


def _strong_pixels(pattern: np.ndarray) -> np.ndarray:
    """Return a bool (H, W) map of pixels whose absolute value is at least half the pattern's largest."""
    magnitude = np.abs(np.asarray(pattern)).reshape(-1, *pattern.shape[-2:]).max(axis=0)
    peak = magnitude.max()
    if peak <= 0:
        return np.zeros(magnitude.shape, dtype=bool)
    return magnitude >= 0.5 * peak


def _class_matched_difference(images, labels, member_rows, other_rows) -> np.ndarray:
    """Members' mean image minus the non-members' class means mixed in the members' class shares."""
    member_mean = images[member_rows].mean(axis=0)
    classes, counts = np.unique(labels[member_rows], return_counts=True)
    reference = np.zeros_like(member_mean)
    weight_used = 0.0
    for cls, count in zip(classes, counts):
        rows = other_rows[labels[other_rows] == cls]
        if rows.size:
            reference += count * images[rows].mean(axis=0)
            weight_used += count
    if weight_used == 0:
        return np.zeros_like(member_mean)
    return member_mean - reference / weight_used


@dataclass
class RegionLabelEvidence:
    """Evidence of how well the pixels of one region alone predict the training labels.

    Attributes
    ----------
    accuracy : float
        Held-out accuracy, on training images, of a nearest-class-mean
        classifier that sees only the region's pixels. In [0, 1].
    majority_rate : float
        Accuracy of always predicting the most common training class, the
        floor that ``accuracy`` is compared with.
    member_agreement : float
        Share of the attractor's members for which the region-only
        classifier predicts the attractor's top prediction, in [0, 1]: how
        far the model's output on them follows the region.
    """

    accuracy: float
    majority_rate: float
    member_agreement: float


def region_label_evidence(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    box: tuple,
    member_images: np.ndarray,
    top_prediction: int,
    *,
    max_rows: int = 5000,
    seed: int = 0,
) -> RegionLabelEvidence:
    """Measure whether a region's pixels predict the training labels on their own.

    A nearest-class-mean classifier on the pixels inside ``box`` is fitted on
    half of a seeded sample of at most ``max_rows`` training images and
    scored on the other half. A region that contains a label code (an easy
    feature that gives the label for most training images) scores near 1; a
    feature tied to one class scores little above the majority rate, because
    it carries no information about the other classes.

    Parameters
    ----------
    train_images : ndarray of shape (n_train, C, H, W)
    train_labels : ndarray of shape (n_train,) of int
    box : tuple of int
        ``(top, left, height, width)`` in pixels.
    member_images : ndarray of shape (n_members, C, H, W)
        The attractor's members, for ``member_agreement``.
    top_prediction : int
        The class the model gives most members.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(train_labels)
    rows = _sample(np.arange(labels.shape[0]), max_rows, rng)
    rows = rng.permutation(rows)
    half = rows.size // 2
    fit_rows, test_rows = rows[:half], rows[half:]

    def region(batch):
        top, left, height, width = box
        return batch[..., top:top + height, left:left + width].reshape(batch.shape[0], -1).astype(np.float64)

    classes = np.unique(labels[fit_rows])
    means = np.stack([region(train_images[fit_rows[labels[fit_rows] == c]]).mean(axis=0) for c in classes])

    def predict(batch):
        features = region(batch)
        distances = (features ** 2).sum(axis=1, keepdims=True) - 2 * features @ means.T + (means ** 2).sum(axis=1)
        return classes[np.argmin(distances, axis=1)]

    counts = np.bincount(labels[test_rows])
    return RegionLabelEvidence(
        accuracy=float(np.mean(predict(train_images[test_rows]) == labels[test_rows])),
        majority_rate=float(counts.max() / counts.sum()),
        member_agreement=float(np.mean(predict(member_images) == top_prediction)) if len(member_images) else 0.0,
    )


def _sample(rows: np.ndarray, limit: int, rng) -> np.ndarray:
    if rows.size <= limit:
        return rows
    return np.sort(rng.choice(rows, size=limit, replace=False))
