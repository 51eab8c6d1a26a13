"""Translated copies: clusters that repeat other clusters, moved along one shared direction.

A feature that does not depend on the class (a sticker, a watermark, a
scanner's noise pattern) adds roughly the same vector to the embedding of
every input that carries it. Each group of similar inputs then appears twice
in the embeddings: once without the feature and once, translated by that
vector, with it. Without labels, such an attractor need not be any tighter
than a natural class, so the ACS cannot show it; the repeated translation
can. The clean benchmark models show no such structure: no two of their
cluster pairs are close copies along one offset (benchmarks/DETECTION.md).

The search, on the embeddings and HDBSCAN clusters:

1. For every pair of clusters ``(a, b)``, find the translation ``t`` that best
   lays ``a`` onto ``b`` (iterative closest point, translation only). Score it
   by the copy fit: the median distance from a moved member to its nearest
   member of the other cluster, over the median nearest-neighbour distance
   inside that cluster. A fit near 1 means a point-for-point copy. Clusters
   of different content fit worse: on the clean benchmark models, two thirds
   of the pairs or more fit above 2.
2. Keep the pairs whose fit is at most ``max_fit``. For each kept pair, collect
   the kept pairs whose translation points the same way (absolute cosine at
   least ``min_cosine``) and has about the same length (ratio at most
   ``max_length_ratio``). From those, take pairs that share no cluster,
   best fit first.
3. The largest such family with at least ``MIN_PAIRS`` pairs wins (ties: the
   better mean fit). When two groups of inputs each appear with and without
   the feature, the four clusters form a parallelogram with two families of
   two pairs. The shift of the feature is the better copy, since the inputs
   are the same and only the offset differs.
4. The carriers of the feature are the side of the family whose embeddings
   have the larger mean norm. In a ReLU layer a feature that is present adds
   activation; this held for every planted model of the benchmark. The other
   side is reported as the partners, so a reader can check the choice.

The search does not run on embeddings of fewer than ``MIN_DIMS`` dimensions,
with fewer than 4 usable clusters, or when more than
``MAX_COPY_PAIR_SHARE`` of all cluster pairs fit as copies. It then returns
the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from mitigate.constants import NOISE_LABEL

# Defaults of find_translated_copies. The detector uses MIN_COSINE and
# MAX_LENGTH_RATIO as they are, and DEFAULT_MAX_FIT as the default of its
# copy_fit_threshold. docs/scores.md explains how they were chosen.
MIN_COSINE = 0.8
MAX_LENGTH_RATIO = 1.5
DEFAULT_MAX_FIT = 2.0

# A family needs this many disjoint pairs, because one pair alone may be two
# clusters that happen to look alike.
MIN_PAIRS = 2

# In fewer dimensions, two unrelated translations often point the same way.
# In 2 dimensions, 41% of random pairs of directions have an absolute cosine
# of at least 0.8.
MIN_DIMS = 8

# When more than this share of all cluster pairs fit as copies, the clusters
# share one shape (isotropic blobs, for example) and the copy fit does not
# tell them apart. Among that many pairs, some point the same way by chance.
# On the benchmark models the share was at most 0.36 for planted spurious
# features and clean models, and 0.38 to 0.73 for gradient starvation.
MAX_COPY_PAIR_SHARE = 0.5

# Clusters with fewer distinct rows cannot show a copy point for point.
MIN_CLUSTER_ROWS = 5

# Each cluster is matched on a random sample of at most this many rows, so the
# cost grows with the square of the number of clusters, not with the rows.
MAX_ROWS_PER_CLUSTER = 400

# Maximum iterations of the closest-point matching. It stops earlier once the
# matches repeat.
MATCH_ITERATIONS = 10


@dataclass
class TranslatedCopies:
    """A family of clusters that are translated copies of other clusters.

    Attributes
    ----------
    carriers : list of int
        Cluster ids of the side that carries the shared feature.
    partners : list of int
        For each carrier, the cluster id it is a copy of.
    shift : ndarray of shape (n_dims,)
        Mean translation from the partners to the carriers, in the space that
        was searched.
    cosines : list of float
        Cosine of each pair's translation with ``shift``. Range [-1, 1];
        near 1 means the pairs move the same way.
    fits : list of float
        Copy fit of each pair (see the module docstring). Range [0, inf);
        1 is a point-for-point copy, higher is a looser match.
    carrier_norm, partner_norm : float
        Mean embedding norm of the carriers' and the partners' rows.
    """

    carriers: list = field(default_factory=list)
    partners: list = field(default_factory=list)
    shift: np.ndarray | None = None
    cosines: list = field(default_factory=list)
    fits: list = field(default_factory=list)
    carrier_norm: float = 0.0
    partner_norm: float = 0.0

    def describe(self, max_fit: float, min_cosine: float) -> str:
        """Return one line that states the evidence, for flag reasons and logs."""
        def joined(values, spec=""):
            return ", ".join(format(value, spec) for value in values)

        return (
            f"clusters {joined(self.carriers)} are copies of clusters {joined(self.partners)}, "
            f"moved along one shared direction; cosine to the mean shift "
            f"{joined(self.cosines, '.2f')} vs {min_cosine}; copy fit {joined(self.fits, '.2f')} "
            f"vs {max_fit}; mean embedding norm {self.carrier_norm:.3g} on the carrying side vs "
            f"{self.partner_norm:.3g}"
        )


def find_translated_copies(
    space: np.ndarray,
    embeddings: np.ndarray,
    cluster_ids: np.ndarray,
    *,
    min_cosine: float = MIN_COSINE,
    max_length_ratio: float = MAX_LENGTH_RATIO,
    max_fit: float = DEFAULT_MAX_FIT,
    random_state: int = 0,
) -> tuple[TranslatedCopies | None, str | None]:
    """Find the largest family of clusters that are translated copies of others.

    Parameters
    ----------
    space : ndarray of shape (n_samples, n_space_dims)
        The rows in which copies are matched. Under the euclidean metric the
        detector passes the input of UMAP (after PCA). Under the cosine metric
        it passes the embeddings as given, because normalising rows to unit
        length bends a shared shift.
    embeddings : ndarray of shape (n_samples, n_dims)
        The original embeddings, for the norms that pick the carrying side.
    cluster_ids : ndarray of int of shape (n_samples,)
        Cluster id per row, ``NOISE_LABEL`` for noise.
    min_cosine : float, default=0.8
        Smallest absolute cosine between a pair's translation and the first
        pair's for the two to count as one shift.
    max_length_ratio : float, default=1.5
        Largest ratio of two translations' lengths within a family.
    max_fit : float, default=2.0
        Largest copy fit of a pair.
    random_state : int, default=0
        Seed of the row samples.

    Returns
    -------
    copies : TranslatedCopies or None
        The family, or None when fewer than ``MIN_PAIRS`` disjoint pairs
        qualify or the search could not run.
    reason : str or None
        Why the search could not run, else None.
    """
    if space.shape[1] < MIN_DIMS:
        return None, (f"the embeddings have {space.shape[1]} dimension(s); the search needs at "
                      f"least {MIN_DIMS}, because in fewer, unrelated translations point the same "
                      "way too often")
    samples = _samples(space, cluster_ids, random_state)
    if len(samples) < 2 * MIN_PAIRS:
        return None, (f"the search needs at least {2 * MIN_PAIRS} clusters of at least "
                      f"{MIN_CLUSTER_ROWS} distinct rows, found {len(samples)}")
    pairs = _matched_pairs(samples, max_fit)
    n_pairs = len(samples) * (len(samples) - 1) // 2
    if len(pairs) > MAX_COPY_PAIR_SHARE * n_pairs:
        return None, (f"{len(pairs)} of {n_pairs} cluster pairs fit as copies (more than "
                      f"{MAX_COPY_PAIR_SHARE:.0%}), so the copy fit does not tell these clusters "
                      "apart (they are alike, or too small for their number of dimensions) and a "
                      "shared direction could arise by chance; pass labels, or try a lower "
                      "copy fit threshold")
    family = _largest_family(pairs, min_cosine, max_length_ratio)
    if family is None:
        return None, None
    return _orient(family, embeddings, cluster_ids), None


def copy_translation(moving: np.ndarray, fixed: np.ndarray) -> tuple[np.ndarray, float]:
    """Find the translation ``t`` that lays ``moving + t`` best onto ``fixed``.

    Iterative closest point with translation only: match each moved row to its
    nearest row of ``fixed``, set ``t`` to the mean difference, repeat.

    Parameters
    ----------
    moving : ndarray of shape (n_a, n_dims)
    fixed : ndarray of shape (n_b, n_dims), with n_b >= 2

    Returns
    -------
    shift : ndarray of shape (n_dims,)
    fit : float
        Median distance from a moved row to its nearest row of ``fixed``,
        over the median nearest-neighbour distance within ``fixed``; inf when
        that spacing is zero.
    """
    return _translate(np.asarray(moving, dtype=np.float64),
                      _IndexedCluster(np.asarray(fixed, dtype=np.float64)))


class _IndexedCluster:
    """The sampled rows of one cluster and their nearest-neighbour spacing, computed once.

    Neighbours are found by brute force, one matrix product over at most
    ``MAX_ROWS_PER_CLUSTER`` rows per search.
    """

    def __init__(self, rows: np.ndarray):
        self.rows = rows
        self.squared_norms = np.einsum("ij,ij->i", rows, rows)
        distance, _ = self.nearest(rows, exclude_self=True)
        self.spacing = float(np.median(distance))

    def nearest(self, points: np.ndarray, exclude_self: bool = False):
        """Return the distance to, and the position of, the nearest row for each of ``points``."""
        squared = (np.einsum("ij,ij->i", points, points)[:, None] + self.squared_norms[None, :]
                   - 2.0 * points @ self.rows.T)
        if exclude_self:
            np.fill_diagonal(squared, np.inf)
        position = np.argmin(squared, axis=1)
        distance = np.sqrt(np.maximum(squared[np.arange(points.shape[0]), position], 0.0))
        return distance, position


def _translate(moving: np.ndarray, target: _IndexedCluster) -> tuple[np.ndarray, float]:
    """Run the closest-point matching of ``moving`` onto ``target``; see :func:`copy_translation`."""
    shift = target.rows.mean(axis=0) - moving.mean(axis=0)
    matched = None
    for _ in range(MATCH_ITERATIONS):
        distance, nearest = target.nearest(moving + shift)
        if matched is not None and np.array_equal(nearest, matched):
            break  # The matches repeat, so the shift has converged.
        matched = nearest
        shift = np.mean(target.rows[nearest] - moving, axis=0)
    else:
        distance, _ = target.nearest(moving + shift)
    if target.spacing == 0:
        return shift, float("inf")
    return shift, float(np.median(distance) / target.spacing)


def _samples(space, cluster_ids, random_state) -> dict:
    """Return cluster id to a random sample of its distinct rows in ``space``, indexed.

    Copies of a row are dropped, because they would make the
    nearest-neighbour spacing of a cluster zero, and no copy fit could then
    be measured.
    """
    rng = np.random.default_rng(random_state)
    result = {}
    for cluster_id in np.unique(cluster_ids):
        if cluster_id == NOISE_LABEL:
            continue
        rows = np.unique(np.asarray(space[cluster_ids == cluster_id], dtype=np.float64), axis=0)
        if rows.shape[0] < MIN_CLUSTER_ROWS:
            continue
        if rows.shape[0] > MAX_ROWS_PER_CLUSTER:
            rows = rows[np.sort(rng.choice(rows.shape[0], size=MAX_ROWS_PER_CLUSTER, replace=False))]
        result[int(cluster_id)] = _IndexedCluster(rows)
    return result


def _matched_pairs(samples: dict, max_fit: float) -> list:
    """Return ``(a, b, shift a -> b, fit)`` for every pair that copies well, best fit first.

    The match runs both ways; the shift and the fit are the means of the two.
    """
    pairs = []
    for a, b in combinations(sorted(samples), 2):
        forward, fit_forward = _translate(samples[a].rows, samples[b])
        backward, fit_backward = _translate(samples[b].rows, samples[a])
        fit = (fit_forward + fit_backward) / 2
        if fit <= max_fit:
            pairs.append((a, b, (forward - backward) / 2, fit))
    return sorted(pairs, key=lambda pair: pair[3])


def _largest_family(pairs: list, min_cosine: float, max_length_ratio: float):
    """Return the largest set of disjoint pairs that share one shift, oriented alike."""
    pairs = [pair for pair in pairs if np.linalg.norm(pair[2]) > 0]
    if len(pairs) < MIN_PAIRS:
        return None
    shifts = np.array([pair[2] for pair in pairs])
    lengths = np.linalg.norm(shifts, axis=1)
    cosines = (shifts / lengths[:, None]) @ (shifts / lengths[:, None]).T
    ratios = lengths[None, :] / lengths[:, None]
    alike = (np.abs(cosines) >= min_cosine) & (ratios >= 1 / max_length_ratio) & (ratios <= max_length_ratio)

    best, best_key = None, None
    for reference in range(len(pairs)):
        family, used = [], set()
        # Pairs are sorted by fit, so the greedy choice takes the better copies first.
        for position in np.flatnonzero(alike[reference]):
            a, b, shift, fit = pairs[position]
            if {a, b} & used:
                continue
            # Oriented so that every pair points along the reference shift.
            family.append((a, b, shift, fit) if cosines[reference, position] > 0 else (b, a, -shift, fit))
            used |= {a, b}
        key = (len(family), -np.mean([pair[3] for pair in family]))
        if len(family) >= MIN_PAIRS and (best_key is None or key > best_key):
            best, best_key = family, key
    return best


def _orient(family: list, embeddings: np.ndarray, cluster_ids: np.ndarray) -> TranslatedCopies:
    """Name the side with the larger mean embedding norm as the carriers.

    NOTE: only ReLU embeddings were measured. Where a feature lowers the
    norm (signed embeddings, normalised layers) the sides may come out swapped.
    """
    tails = [pair[0] for pair in family]
    heads = [pair[1] for pair in family]
    norms = np.linalg.norm(np.asarray(embeddings, dtype=np.float64), axis=1)
    tail_norm = float(norms[np.isin(cluster_ids, tails)].mean())
    head_norm = float(norms[np.isin(cluster_ids, heads)].mean())
    shift = np.mean([pair[2] for pair in family], axis=0)
    length = np.linalg.norm(shift)
    cosines = [float(pair[2] @ shift / (np.linalg.norm(pair[2]) * length)) for pair in family]
    if tail_norm > head_norm:
        heads, tails, shift = tails, heads, -shift
        head_norm, tail_norm = tail_norm, head_norm
    return TranslatedCopies(
        carriers=heads, partners=tails, shift=shift, cosines=cosines,
        fits=[float(pair[3]) for pair in family], carrier_norm=head_norm, partner_norm=tail_norm,
    )
