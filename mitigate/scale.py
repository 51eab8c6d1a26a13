"""Detection on large embedding sets: UMAP and HDBSCAN on a stratified sample.

UMAP on every row costs minutes per hundred thousand rows on one core, and
HDBSCAN with ``min_samples`` near ``n_samples / 50`` needs that many
neighbours for every row. Above the detector's ``large_n_threshold`` the
reduced space (after the detector's own PCA) goes through these steps:

1. Strata: k-means with ``N_STRATA`` centres, fitted on ``STRATA_FIT_ROWS``
   random rows, partitions every row.
2. Sample: each stratum gives rows in proportion to its size, and at least
   ``MIN_STRATUM_SHARE`` of an even share, so that small regions of the space
   (a small attractor) have enough sample neighbours to place their rows.
3. UMAP is fitted on the distinct sample rows, and HDBSCAN runs on the UMAP
   coordinates of every sample row (the caller's clustering function, so its
   parameters apply to sample rows).
4. Every other row is placed from its ``n_neighbors`` nearest sample rows,
   found by an exact (brute-force) search and weighted by UMAP's membership
   strengths. Its coordinates are the weighted mean of
   the neighbours' coordinates, which is UMAP's own starting point for
   ``transform`` without the refinement epochs. Its cluster is the weighted
   vote of the neighbours' clusters, noise included.

Past the sample, the cost is one k-means prediction and one exact
neighbour search over the sample per row, so it grows as
``n * sample_size``. Every
choice is returned in ``settings`` for the report. Scores (ACS, entropy,
concentration, accuracy) are still computed on every row of the original
embeddings.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mitigate.validation import check_int

logger = logging.getLogger(__name__)

DEFAULT_SAMPLE_SIZE = 20_000

# k-means strata of the reduced space. Predicting 64 centres costs 64
# distances per row; the average stratum contains 1/64 (1.6%) of the rows.
N_STRATA = 64
STRATA_FIT_ROWS = 20_000

# A stratum gets at least this fraction of an even share of the sample
# (sample_size / N_STRATA rows), or all its rows if it has fewer. With the
# default sizes that is 78 rows, below HDBSCAN's default min_cluster_size on
# the sample (400), so the boost alone cannot create a cluster.
MIN_STRATUM_SHARE = 0.25

# Rows placed (or assigned a stratum) per call; bounds the memory of one call.
PLACE_CHUNK_ROWS = 65_536


@dataclass
class StratifiedSample:
    """Rows drawn from k-means strata.

    Attributes
    ----------
    rows : ndarray of shape (n_drawn,), int64
        Sorted row indices of the sample.
    strata : ndarray of shape (n_samples,), int64
        Stratum of every row.
    settings : dict
        The parameters used, for the report.
    """

    rows: np.ndarray
    strata: np.ndarray
    settings: dict


@dataclass
class SampledClustering:
    """Coordinates and cluster ids of every row, from a clustered sample.

    Attributes
    ----------
    coords : ndarray of shape (n_samples, n_components), float32
    cluster_ids : ndarray of shape (n_samples,), int64
        ``NOISE_LABEL`` (-1) for noise.
    sample_rows : ndarray of shape (n_drawn,), int64
    settings : dict
        Every shortcut with its parameters, for the report.
    """

    coords: np.ndarray
    cluster_ids: np.ndarray
    sample_rows: np.ndarray
    settings: dict


def stratified_sample(space: np.ndarray, *, sample_size: int, random_state: int = 0,
                      n_strata: int = N_STRATA) -> StratifiedSample:
    """Draw about ``sample_size`` rows, stratified by a k-means partition of ``space``.

    Parameters
    ----------
    space : ndarray of shape (n_samples, n_dims)
        The reduced embeddings (after normalisation and PCA).
    sample_size : int
        Target number of rows. The floor per stratum can add at most
        ``n_strata * MIN_STRATUM_SHARE * sample_size / n_strata`` rows.
    random_state : int
        Seeds the k-means fit and the draws.
    n_strata : int
        Number of k-means centres; lowered to the number of rows when larger.

    Returns
    -------
    StratifiedSample
    """
    from sklearn.cluster import KMeans

    check_int("sample_size", sample_size, minimum=2)
    n_rows = space.shape[0]
    rng = np.random.default_rng(random_state)
    n_strata = min(n_strata, n_rows)

    fit_rows = np.sort(rng.choice(n_rows, size=min(n_rows, STRATA_FIT_ROWS), replace=False))
    kmeans = KMeans(n_clusters=n_strata, n_init=1, random_state=random_state)
    with warnings.catch_warnings():
        # Many identical rows leave fewer distinct points than centres; the
        # strata are then coarser, which only weakens the stratification.
        warnings.filterwarnings("ignore", message="Number of distinct clusters")
        kmeans.fit(space[fit_rows])
    strata = np.concatenate([
        kmeans.predict(space[start:start + PLACE_CHUNK_ROWS])
        for start in range(0, n_rows, PLACE_CHUNK_ROWS)
    ]).astype(np.int64)

    counts = np.bincount(strata, minlength=n_strata)
    floor = max(1, int(MIN_STRATUM_SHARE * sample_size / n_strata))
    proportional = np.rint(sample_size * counts / n_rows).astype(np.int64)
    allocation = np.minimum(counts, np.maximum(proportional, floor))

    order = np.argsort(strata, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    drawn = [
        rng.choice(order[starts[k]:starts[k + 1]], size=allocation[k], replace=False)
        for k in range(n_strata)
        if allocation[k] > 0
    ]
    rows = np.sort(np.concatenate(drawn))
    settings = {
        "sample": "stratified by a k-means partition of the reduced space",
        "sample_size": int(rows.size),
        "sample_size_requested": int(sample_size),
        "n_strata": int(n_strata),
        "strata_fit_rows": int(fit_rows.size),
        "min_rows_per_stratum": int(floor),
    }
    return StratifiedSample(rows=rows, strata=strata, settings=settings)


def cluster_by_sample(
    space: np.ndarray,
    *,
    cluster: Callable[[np.ndarray], np.ndarray],
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    n_neighbors: int = 15,
    n_components: int = 2,
    min_dist: float = 0.0,
    random_state: int = 0,
) -> SampledClustering:
    """Fit UMAP and cluster on a stratified sample, then place every other row.

    Parameters
    ----------
    space : ndarray of shape (n_samples, n_dims)
        The reduced embeddings (after normalisation and PCA).
    cluster : callable
        ``cluster(coords) -> cluster ids`` for the sample's UMAP coordinates,
        of shape (n_drawn, n_components); the detector passes its HDBSCAN step,
        so ``min_cluster_size`` and ``min_samples`` count sample rows here.
    sample_size : int
        Target sample size, see :func:`stratified_sample`.
    n_neighbors, n_components, min_dist : UMAP parameters
        ``n_neighbors`` is also the number of sample rows that place each
        other row.
    random_state : int
        Seeds the strata, the draws and UMAP (which then runs single-threaded).

    Returns
    -------
    SampledClustering

    Notes
    -----
    A cluster of ``m`` sample rows stands for about ``m * n_samples /
    sample_size`` rows, so structures smaller than ``min_cluster_size *
    n_samples / sample_size`` rows are not resolved, unlike on the full path.
    The clusters match UMAP and HDBSCAN on every row only approximately; the
    planted benchmarks in ``benchmarks/SCALE.md`` measure how closely.
    """
    n_rows = space.shape[0]
    started = time.perf_counter()
    sample = stratified_sample(space, sample_size=min(sample_size, n_rows), random_state=random_state)
    settings = dict(sample.settings)
    logger.info("sampled path: %d of %d rows in %d strata (%.1f s)", sample.rows.size, n_rows,
                settings["n_strata"], time.perf_counter() - started)

    from mitigate.detect import _unique_rows

    distinct, inverse = _unique_rows(space[sample.rows])
    reducer = _fit_umap(distinct, n_neighbors=n_neighbors, n_components=n_components,
                        min_dist=min_dist, random_state=random_state)
    sample_coords = reducer.embedding_[inverse]
    sample_ids = np.asarray(cluster(sample_coords), dtype=np.int64)
    logger.info("sampled path: UMAP and clustering of the sample done (%.1f s)",
                time.perf_counter() - started)

    # Cluster of every distinct sample row: the one its first copy received.
    _, first = np.unique(inverse, return_index=True)
    distinct_ids = sample_ids[first]

    coords = np.empty((n_rows, n_components), dtype=np.float32)
    cluster_ids = np.empty(n_rows, dtype=np.int64)
    coords[sample.rows] = sample_coords
    cluster_ids[sample.rows] = sample_ids
    rest = np.setdiff1d(np.arange(n_rows), sample.rows, assume_unique=True)
    n_unplaced = _place_rows(space, rest, reducer, distinct, distinct_ids, coords, cluster_ids)
    logger.info("sampled path: %d other rows placed (%.1f s)", rest.size, time.perf_counter() - started)

    settings.update(
        reducer="umap fitted on the distinct sample rows",
        n_neighbors=int(reducer.n_neighbors),
        n_components=int(n_components),
        min_dist=float(min_dist),
        neighbour_search="exact (brute force over the distinct sample rows)",
        clustered_rows="the sample; HDBSCAN settings count sample rows",
        placement="other rows: membership-weighted mean of the coordinates and weighted vote "
                  f"of the clusters of their {int(reducer.n_neighbors)} nearest sample rows",
        n_rows_placed=int(rest.size),
        n_rows_without_neighbours=int(n_unplaced),
    )
    return SampledClustering(coords=coords, cluster_ids=cluster_ids, sample_rows=sample.rows,
                             settings=settings)


def _fit_umap(rows: np.ndarray, *, n_neighbors: int, n_components: int, min_dist: float,
              random_state: int):
    import umap

    if n_neighbors >= rows.shape[0]:
        clamped = rows.shape[0] - 1
        warnings.warn(
            f"n_neighbors={n_neighbors} is not below the {rows.shape[0]} distinct sample rows; "
            f"using n_neighbors={clamped}",
            UserWarning,
            stacklevel=4,
        )
        n_neighbors = clamped
    with warnings.catch_warnings():
        # umap warns that a seed disables parallelism: that is the intent.
        warnings.filterwarnings("ignore", message=".*n_jobs.*overridden.*")
        # Separate clusters make a disconnected graph; UMAP handles it.
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        reducer = umap.UMAP(
            n_neighbors=n_neighbors,
            n_components=n_components,
            min_dist=min_dist,
            random_state=random_state,
            init="spectral" if rows.shape[0] > n_components + 2 else "random",
        )
        reducer.fit(rows)
    if not np.isfinite(reducer.embedding_).all():
        raise RuntimeError("UMAP returned non-finite coordinates; try metric='euclidean' or pca_dims")
    return reducer


def _place_rows(space, rows, reducer, distinct, distinct_ids, coords, cluster_ids) -> int:
    """Fill ``coords`` and ``cluster_ids`` of ``rows`` from their sample neighbours.

    The neighbours are exact: a brute-force search over the distinct sample
    rows (``distinct``), in the reduced space. UMAP's own ``transform``
    queries its approximate index instead, which on the 100k benchmark gave a
    few rows of a tight, well-separated cluster the neighbours of another one.
    The weights are UMAP's membership strengths for new points, computed from
    those distances as ``transform`` computes them.

    Returns the number of rows that had no neighbour with a positive weight;
    they get NaN coordinates and the noise label.
    """
    import scipy.sparse
    from sklearn.neighbors import NearestNeighbors
    # NOTE: module-level functions of umap-learn 0.5, not its documented API.
    from umap.umap_ import compute_membership_strengths, smooth_knn_dist

    from mitigate.constants import NOISE_LABEL

    n_neighbors = int(reducer.n_neighbors)
    search = NearestNeighbors(n_neighbors=n_neighbors, algorithm="brute").fit(distinct)
    values, codes = np.unique(distinct_ids, return_inverse=True)
    one_hot = scipy.sparse.csr_matrix(
        (np.ones(codes.size, dtype=np.float32), (np.arange(codes.size), codes)),
        shape=(codes.size, values.size),
    )
    # transform's local connectivity for new points, see umap.UMAP.transform.
    local_connectivity = max(0.0, float(reducer.local_connectivity) - 1.0)
    n_unplaced = 0
    for start in range(0, rows.size, PLACE_CHUNK_ROWS):
        chunk = rows[start:start + PLACE_CHUNK_ROWS]
        distances, indices = search.kneighbors(np.asarray(space[chunk], dtype=np.float32))
        distances = distances.astype(np.float32, order="C")
        sigmas, rhos = smooth_knn_dist(distances, float(n_neighbors), local_connectivity=local_connectivity)
        graph_rows, graph_cols, weights, _ = compute_membership_strengths(
            indices.astype(np.int32), distances, sigmas, rhos, bipartite=True)
        graph = scipy.sparse.csr_matrix((weights, (graph_rows, graph_cols)),
                                        shape=(chunk.size, distinct.shape[0]))
        weight_sums = np.asarray(graph.sum(axis=1)).ravel()
        placed = weight_sums > 0
        n_unplaced += int(np.sum(~placed))

        votes = (graph @ one_hot).toarray()
        cluster_ids[chunk] = np.where(placed, values[np.argmax(votes, axis=1)], NOISE_LABEL)
        mean = (graph @ reducer.embedding_) / np.where(placed, weight_sums, 1.0)[:, None]
        mean[~placed] = np.nan
        coords[chunk] = mean
    if n_unplaced:
        warnings.warn(
            f"{n_unplaced} row(s) had no sample neighbour with a positive weight; they are "
            "treated as noise with NaN coordinates",
            UserWarning,
            stacklevel=4,
        )
    return n_unplaced
