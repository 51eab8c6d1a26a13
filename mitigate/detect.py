"""Attractor detection: reduce, cluster, score every cluster, flag attractors.

The detector follows the scikit-learn estimator contract: ``__init__`` only
stores parameters, ``fit`` returns ``self``, and fitted results live in
attributes ending in ``_``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

from mitigate import scores, shifts
from mitigate.constants import (
    DEFAULT_ACCURACY_GAP,
    DEFAULT_ACS_THRESHOLD,
    DEFAULT_ACS_THRESHOLD_UNLABELLED,
    DEFAULT_CONCENTRATION_THRESHOLD,
    DEFAULT_ENTROPY_THRESHOLD,
    NOISE_LABEL,
)
from mitigate.validation import check_embeddings, check_fraction, check_int, check_labels, check_positive

logger = logging.getLogger(__name__)

METRICS = ("euclidean", "cosine")

# Below this many distinct rows UMAP's neighbour graph is too small to be
# meaningful, so clustering runs on the (PCA-reduced) embeddings directly.
SMALL_SAMPLE_ROWS = 64

# Without labels, a cluster counts as standing out when its ACS is at least
# this many times the median ACS of the other clusters. Its members then sit
# about 2.5 times closer together (root-mean-square distance) than those of a
# typical cluster. See docs/scores.md for how the value was chosen.
DEFAULT_RELATIVE_ACS_THRESHOLD = 6.5

# Without labels, a cluster with at least this share of its members at one
# identical embedding counts as collapsed and standing out, whatever its ACS,
# because the model cannot tell those inputs apart at all. A 3-unit ReLU
# layer sends 5% to 100% of the audit images to the all-zero embedding
# (benchmarks/DETECTION.md). The relative ACS cannot show it there, because
# every cluster of such a narrow space is tight. No planted or clean
# benchmark model without collapse has two audit images at one embedding.
POINT_MASS_SHARE = 0.5

# A flagged cluster must pull at least MIN_PULLED_CLASSES classes, other than
# its top prediction, into that prediction, each with at least MIN_PULLED_SHARE
# of the members. Two confusable classes meeting at a decision boundary pull
# one class; every planted attractor in benchmarks/detection.py pulls at least
# three. See docs/scores.md.
MIN_PULLED_CLASSES = 2
MIN_PULLED_SHARE = 0.05
# A cluster whose members are mostly misclassified counts as wrong even when
# the rest of the model is no better. In a collapsed model every region is
# poor, so the gap to the rows outside the cluster cannot show the attractor.
MAX_WRONG_ACCURACY = 0.5

# Checks that one fragment of an attractor (the members of one captured
# class) fails on its own while the whole attractor passes them.
FRAGMENT_CHECKS = ("mixed", "pulls several classes")

# Largest absolute values that the euclidean path uses as they are. Squares of
# values outside this range come near the float32 limits (about 1e-38 and 3e38).
SAFE_MAGNITUDE = (1e-8, 1e8)

# HDBSCAN merges clusters that split at a distance below this fraction of the
# root-mean-square distance of the clustered points to their centroid, so that
# rows differing only by rounding noise are not split into separate clusters.
CLUSTER_EPSILON_FRACTION = 1e-3


@dataclass
class ClusterScores:
    """Scores of one HDBSCAN cluster, all computed on the original embeddings."""

    cluster_id: int
    size: int
    members: np.ndarray
    cluster_ids: list = field(default_factory=list)
    acs: float | None = None
    acs_reason: str | None = None
    relative_acs: float | None = None
    relative_acs_reason: str | None = None
    label_entropy: float | None = None
    label_entropy_reason: str | None = None
    top_label: object = None
    top_label_share: float | None = None
    prediction_concentration: float | None = None
    top_prediction: object = None
    prediction_reason: str | None = None
    accuracy: float | None = None
    accuracy_reason: str | None = None
    point_share: float | None = None
    copies: shifts.TranslatedCopies | None = None
    flagged: bool = False
    flag_reasons: list = field(default_factory=list)

    def to_dict(self, ids: np.ndarray | None = None) -> dict:
        """Return a JSON-ready dict; member ids are row indices unless ``ids`` is given."""
        result = asdict(self)
        # The relative ACS is shown through flag_reasons; the report schema
        # has no field for it.
        result.pop("relative_acs")
        result.pop("relative_acs_reason")
        result.pop("point_share")
        result.pop("copies")
        members = self.members if ids is None else np.asarray(ids)[self.members]
        result["members"] = [_plain(v) for v in members]
        result["top_label"] = _plain(self.top_label)
        result["top_prediction"] = _plain(self.top_prediction)
        return result


class AttractorDetector:
    """Find clusters of embeddings that behave like hypnotic attractors.

    Steps: optional PCA, UMAP to ``n_components`` dimensions, HDBSCAN on the
    UMAP coordinates, then per cluster the ACS, label entropy, prediction
    concentration and accuracy on the original embeddings. A cluster is
    flagged when every criterion that the given inputs allow holds:

    - collapsed: ``ACS >= acs_threshold`` (always available);
    - mixed: normalised label entropy ``>= entropy_threshold`` (needs labels);
    - funnelled: prediction concentration ``>= concentration_threshold``
      (needs predictions);
    - wrong: member accuracy at most ``accuracy outside the cluster -
      accuracy_gap``, or below ``MAX_WRONG_ACCURACY`` (needs labels and
      predictions);
    - pulls several classes: at least ``MIN_PULLED_CLASSES`` classes other
      than the top prediction each make up ``MIN_PULLED_SHARE`` of the
      members and are given the top prediction (needs labels and
      predictions). Two confusable classes meeting at a decision boundary
      are therefore not flagged;
    - stands out: without labels only, ``relative ACS >=
      relative_acs_threshold``, see :func:`mitigate.scores.relative_acs`.

    Without labels the plain ACS scores every natural class cluster of a
    trained model as collapsed, so "collapsed" alone would flag every class.
    The "stands out" criterion flags only clusters much tighter than the
    other clusters, and needs at least 3 clusters; with fewer, nothing is
    flagged by it and ``relative_acs_reason`` gives the reason. One more rule
    applies without labels: a cluster with at least ``POINT_MASS_SHARE`` of
    its members at one identical embedding (``point_share``) counts as
    collapsed and standing out, since the model cannot tell those inputs
    apart at all. This finds a collapse of the whole space, where every
    cluster is tight or the reference spread is zero.

    A third rule applies without labels, to attractors that are no tighter
    than a natural class. When at least two disjoint pairs of clusters are
    translated copies of each other along one shared direction, the side that
    carries the shift is flagged as one attractor (``translated copies``, see
    :mod:`mitigate.shifts`). A feature that does not depend on the class, such
    as a sticker or a watermark, moves the inputs that carry it this way.

    Parameters
    ----------
    n_neighbors : int, default=15
        UMAP neighbourhood size; clamped (with a warning) below the number of
        distinct rows.
    n_components : int, default=2
        UMAP output dimensions. Must be below ``n_samples - 1``.
    min_dist : float, default=0.0
        UMAP ``min_dist``; 0 packs clusters tightly, which helps HDBSCAN.
    metric : {"euclidean", "cosine"}, default="euclidean"
        Distance between embeddings. ``"cosine"`` L2-normalises the rows
        first; all-zero rows are reported in ``zero_rows_`` and kept at the
        origin.
    pca_dims : int or None, default=50
        Reduce to this many principal components before UMAP when the
        embeddings are wider. None skips PCA.
    min_cluster_size : int or None, default=None
        HDBSCAN ``min_cluster_size``; None picks ``max(15, n_samples // 50)``.
        A value above the number of rows is clamped with a warning.
    min_samples : int or None, default=None
        HDBSCAN ``min_samples``; None uses HDBSCAN's default (equal to
        ``min_cluster_size``).
    acs_threshold : float or None, default=None
        None picks 1.25 for the class-matched ACS (labels given) and 2.0
        for the plain ACS (no labels).
    relative_acs_threshold : float, default=6.5
        Without labels, the smallest ratio of a cluster's ACS to the median
        ACS of the other clusters that flags it.
    entropy_threshold : float, default=0.3
    concentration_threshold : float, default=0.6
    accuracy_gap : float, default=0.2
        Flagging thresholds; see above.
    nonfinite : {"raise", "drop"}, default="raise"
        Handling of rows with NaN or infinity; see
        :func:`mitigate.validation.check_embeddings`.
    random_state : int, default=0
        Seed for PCA and UMAP. With a seed, UMAP runs single-threaded, so two
        fits on the same machine give the same clusters.
    large_n_threshold : int or None, default=50_000
        Above this many rows, UMAP and HDBSCAN run on a stratified sample of
        ``sample_size`` rows and every other row is placed by its nearest
        sample rows; see :mod:`mitigate.scale`. None always uses every row.
    sample_size : int, default=20_000
        Target sample size of that path; ``min_cluster_size`` and
        ``min_samples`` then count sample rows.
    copy_fit_threshold : float or None, default=2.0
        Without labels, the largest copy fit of a pair of clusters in the
        translated-copies rule (1 is a point-for-point copy). None turns the
        rule off.

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,)
        Cluster id per row; ``NOISE_LABEL`` (-1) for noise and dropped rows.
    coords_ : ndarray of shape (n_samples, n_components)
        Reduced coordinates (UMAP, or PCA on the small-sample path).
    clusters_ : list of ClusterScores
        Every cluster, noise excluded.
    attractors_ : list of ClusterScores
        The flagged clusters (fragments with the same top prediction merged),
        the one with the most wrongly predicted members first.
    overall_accuracy_ : float or None
    acs_threshold_ : float
        The threshold used.
    acs_reference_ : str
        "class-matched" or "all rows", see
        :func:`mitigate.scores.attractor_collapse_score`.
    unavailable_scores_ : dict
        Score name to the reason it could not be computed.
    settings_ : dict
        The values actually used, after clamping.
    zero_rows_ : ndarray of int
        Rows (indices among the kept rows) that were all zero under the
        cosine metric. They have no direction, stay at the origin of the
        normalised space and never take part in a cluster.
    kept_rows_ : ndarray of bool
        False for rows dropped as non-finite.
    translated_copies_ : TranslatedCopies or None
        Without labels, the family of translated copies found (flagged or
        not); None when there is none, labels were given or the rule is off.
    """

    def __init__(
        self,
        *,
        n_neighbors: int = 15,
        n_components: int = 2,
        min_dist: float = 0.0,
        metric: str = "euclidean",
        pca_dims: int | None = 50,
        min_cluster_size: int | None = None,
        min_samples: int | None = None,
        acs_threshold: float | None = None,
        relative_acs_threshold: float = DEFAULT_RELATIVE_ACS_THRESHOLD,
        entropy_threshold: float = DEFAULT_ENTROPY_THRESHOLD,
        concentration_threshold: float = DEFAULT_CONCENTRATION_THRESHOLD,
        accuracy_gap: float = DEFAULT_ACCURACY_GAP,
        nonfinite: str = "raise",
        random_state: int = 0,
        large_n_threshold: int | None = 50_000,
        sample_size: int = 20_000,
        copy_fit_threshold: float | None = shifts.DEFAULT_MAX_FIT,
    ):
        self.n_neighbors = n_neighbors
        self.n_components = n_components
        self.min_dist = min_dist
        self.metric = metric
        self.pca_dims = pca_dims
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.acs_threshold = acs_threshold
        self.relative_acs_threshold = relative_acs_threshold
        self.entropy_threshold = entropy_threshold
        self.concentration_threshold = concentration_threshold
        self.accuracy_gap = accuracy_gap
        self.nonfinite = nonfinite
        self.random_state = random_state
        self.large_n_threshold = large_n_threshold
        self.sample_size = sample_size
        self.copy_fit_threshold = copy_fit_threshold

    # -- fitting -------------------------------------------------------------

    def fit(self, embeddings, labels=None, predictions=None):
        """Cluster ``embeddings`` and score every cluster.

        Parameters
        ----------
        embeddings : array-like of shape (n_samples, n_dims)
        labels : array-like of shape (n_samples,), optional
            True classes, integers or strings.
        predictions : array-like of shape (n_samples,), optional
            The model's predicted classes, in the same coding as ``labels``.

        Returns
        -------
        self
        """
        self._check_params()
        x, kept = check_embeddings(embeddings, nonfinite=self.nonfinite)
        n_total = kept.shape[0]
        label_codes, label_classes, pred_codes, pred_classes = self._encode_targets(
            labels, predictions, n_total, kept
        )

        space = self._prepare_space(x)
        coords, cluster_ids = self._reduce_and_cluster(space)
        cluster_ids[self.zero_rows_] = NOISE_LABEL
        self.settings_.update(
            n_nonfinite_rows_dropped=int(np.sum(~kept)),
            n_zero_rows=int(self.zero_rows_.size),
            relative_acs_threshold=self.relative_acs_threshold,
            copy_fit_threshold=self.copy_fit_threshold,
        )

        self.kept_rows_ = kept
        self.labels_ = np.full(n_total, NOISE_LABEL, dtype=np.int64)
        self.labels_[kept] = cluster_ids
        self.coords_ = np.full((n_total, coords.shape[1]), np.nan, dtype=np.float32)
        self.coords_[kept] = coords
        self.embeddings_ = x
        self._kept_index = np.flatnonzero(kept)

        self.overall_accuracy_ = None
        self.unavailable_scores_ = {}
        self.acs_threshold_ = self.acs_threshold
        if self.acs_threshold_ is None:
            self.acs_threshold_ = (
                DEFAULT_ACS_THRESHOLD_UNLABELLED if label_codes is None else DEFAULT_ACS_THRESHOLD
            )
        self.acs_reference_ = "all rows" if label_codes is None else "class-matched"
        if label_codes is None:
            copies_rule = ""
            if self.copy_fit_threshold is not None:
                copies_rule = ("; clusters that are translated copies of others along one shared "
                               "direction are flagged together")
            warnings.warn(
                "no labels given: a cluster is flagged only when its ACS is at least "
                f"{self.relative_acs_threshold} times the median of the other clusters, or when "
                f"at least {POINT_MASS_SHARE:.0%} of its members share one embedding{copies_rule}. "
                "Natural classes also score a high ACS against all rows, so an attractor that is "
                "no tighter than a natural class is missed unless it shows as such copies",
                UserWarning,
                stacklevel=2,
            )
            self.unavailable_scores_["label_entropy"] = "no labels given"
            self.unavailable_scores_["class-matched ACS"] = (
                "no labels given: ACS is measured against all rows, and a cluster is flagged "
                "only when it is much tighter than the other clusters (relative ACS), when half "
                "its members share one embedding, or when it is a translated copy of another "
                "cluster"
            )
        if pred_codes is None:
            self.unavailable_scores_["prediction_concentration"] = "no predictions given"
        if label_codes is None or pred_codes is None:
            self.unavailable_scores_["accuracy"] = "needs both labels and predictions"
        else:
            self.overall_accuracy_ = scores.accuracy(
                label_classes[label_codes], pred_classes[pred_codes]
            )

        targets = (x, label_codes, label_classes, pred_codes, pred_classes)
        self.clusters_ = [
            self._score_rows(np.flatnonzero(cluster_ids == cluster_id), [int(cluster_id)], *targets)
            for cluster_id in np.unique(cluster_ids)
            if cluster_id != NOISE_LABEL
        ]
        for cluster in self.clusters_:
            self._compare_with_others(cluster)
            self._flag(cluster)
        attractors = self._merge_fragments(targets, cluster_ids)
        self.translated_copies_ = None
        if label_codes is None and self.copy_fit_threshold is None:
            self.unavailable_scores_["translated copies"] = "turned off (copy_fit_threshold=None)"
        elif label_codes is None:
            # Normalising rows to unit length bends a shared shift, so under the
            # cosine metric the search runs on the embeddings as given.
            search_space = x if self.metric == "cosine" else space
            attractors.extend(self._flag_translated_copies(search_space, targets, cluster_ids, attractors))
        self.attractors_ = sorted(attractors, key=_damage, reverse=True)
        logger.info(
            "detection: %d clusters, %d flagged as attractors, %d noise rows",
            len(self.clusters_), len(self.attractors_), int(np.sum(cluster_ids == NOISE_LABEL)),
        )
        return self

    def assign(self, embeddings, k: int = 15) -> np.ndarray:
        """Assign new embeddings to fitted clusters by a k-nearest-neighbour vote.

        Used by probes to ask whether an edited input lands in a cluster. The
        vote runs in the same space the detector clustered in (after PCA and
        normalisation); noise is a possible result.

        Returns
        -------
        ndarray of shape (n_new,) of cluster ids
        """
        from sklearn.neighbors import KNeighborsClassifier

        self._check_fitted()
        new, _ = check_embeddings(embeddings, name="new embeddings", min_rows=1)
        if new.shape[1] != self.embeddings_.shape[1]:
            raise ValueError(
                f"new embeddings have {new.shape[1]} dims, the detector was fitted on "
                f"{self.embeddings_.shape[1]}"
            )
        if getattr(self, "_knn", None) is None:
            fitted_ids = self.labels_[self._kept_index]
            k = min(k, fitted_ids.shape[0])
            self._knn = KNeighborsClassifier(n_neighbors=k).fit(self._space, fitted_ids)
        return self._knn.predict(self._transform_space(new))

    # -- steps ---------------------------------------------------------------

    def _check_params(self):
        check_int("n_neighbors", self.n_neighbors, minimum=2)
        check_int("n_components", self.n_components, minimum=1)
        check_fraction("min_dist", self.min_dist, low=0.0, high=1.0)
        if self.metric not in METRICS:
            raise ValueError(f"invalid metric={self.metric!r}; expected one of {METRICS}")
        if self.pca_dims is not None:
            check_int("pca_dims", self.pca_dims, minimum=1)
        if self.min_cluster_size is not None:
            check_int("min_cluster_size", self.min_cluster_size, minimum=2)
        if self.min_samples is not None:
            check_int("min_samples", self.min_samples, minimum=1)
        check_fraction("entropy_threshold", self.entropy_threshold)
        check_fraction("concentration_threshold", self.concentration_threshold)
        check_fraction("accuracy_gap", self.accuracy_gap)
        if self.acs_threshold is not None and not self.acs_threshold > 0:
            raise ValueError(f"acs_threshold must be positive, got {self.acs_threshold}")
        if not self.relative_acs_threshold > 0:
            raise ValueError(
                f"relative_acs_threshold must be positive, got {self.relative_acs_threshold}"
            )
        if self.copy_fit_threshold is not None:
            check_positive("copy_fit_threshold", self.copy_fit_threshold,
                           hint=" (default 2.0), or None to turn the translated-copies rule off")
        if self.large_n_threshold is not None:
            check_int("large_n_threshold", self.large_n_threshold, minimum=1)
        check_int("sample_size", self.sample_size, minimum=SMALL_SAMPLE_ROWS)

    def _encode_targets(self, labels, predictions, n_total, kept):
        label_codes = label_classes = pred_codes = pred_classes = None
        if labels is not None:
            label_codes, label_classes = check_labels(labels, n_total, name="labels")
            label_codes = label_codes[kept]
        if predictions is not None:
            pred_codes, pred_classes = check_labels(predictions, n_total, name="predictions")
            pred_codes = pred_codes[kept]
        return label_codes, label_classes, pred_codes, pred_classes

    def _prepare_space(self, x: np.ndarray) -> np.ndarray:
        """Normalise (cosine) and PCA-reduce; the result is what UMAP and the kNN see."""
        self.zero_rows_ = np.array([], dtype=np.int64)
        self._pca = None
        if self.metric == "cosine":
            # Compared exactly: a norm computed in float32 underflows to 0
            # for rows of values around 1e-23 that still have a direction.
            zero = ~x.any(axis=1)
            if zero.any():
                self.zero_rows_ = np.flatnonzero(zero)
                warnings.warn(
                    f"{zero.sum()} all-zero row(s) have no direction under the cosine metric "
                    f"(rows {self.zero_rows_[:10].tolist()}); they stay at the origin and are "
                    "left out of every cluster",
                    UserWarning,
                    stacklevel=3,
                )
        space = self._transform_space(x, fit=True)
        self._space = space
        self._knn = None
        return space

    def _transform_space(self, x: np.ndarray, fit: bool = False) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if self.metric == "cosine":
            x = _unit_rows(x)
        else:
            # Embeddings of extreme magnitude are divided by one power of two,
            # which keeps every distance in proportion, so that their squares
            # neither overflow nor underflow in PCA and UMAP.
            if fit:
                self._scale = _magnitude_scale(x)
            if self._scale != 1.0:
                x = x / np.float32(self._scale)
        if fit:
            if self.pca_dims is not None and x.shape[1] > self.pca_dims and x.shape[0] > self.pca_dims:
                from sklearn.decomposition import PCA

                self._pca = PCA(n_components=self.pca_dims, random_state=self.random_state).fit(x)
        if self._pca is not None:
            x = self._pca.transform(x).astype(np.float32)
        return x

    def _reduce_and_cluster(self, space: np.ndarray):
        n_rows = space.shape[0]
        if self.n_components >= n_rows - 1:
            raise ValueError(
                f"n_components={self.n_components} needs more than {self.n_components + 1} "
                f"samples, got {n_rows}; lower n_components or pass more embeddings"
            )
        unique_rows, inverse = _unique_rows(space)
        n_unique = unique_rows.shape[0]
        self.settings_ = {
            "metric": self.metric,
            "pca_dims": None if self._pca is None else int(self._pca.n_components_),
            "n_rows": int(n_rows),
            "n_distinct_rows": int(n_unique),
            "random_state": self.random_state,
        }

        if self.large_n_threshold is not None and n_rows > self.large_n_threshold \
                and n_unique >= SMALL_SAMPLE_ROWS:
            from mitigate.scale import cluster_by_sample

            sampled = cluster_by_sample(
                space, cluster=self._hdbscan, sample_size=self.sample_size,
                n_neighbors=self.n_neighbors, n_components=self.n_components,
                min_dist=self.min_dist, random_state=self.random_state,
            )
            self.settings_.update(sampled.settings)
            return sampled.coords, _unify_duplicates(sampled.cluster_ids, inverse)

        if n_unique < SMALL_SAMPLE_ROWS or n_unique <= self.n_components + 1:
            coords = self._small_sample_coords(space)
            self.settings_["reducer"] = "pca (small-sample path: too few distinct rows for UMAP)"
            cluster_space = space
        else:
            unique_coords = self._umap(unique_rows)
            coords = unique_coords[inverse]
            cluster_space = coords

        cluster_ids = self._hdbscan(cluster_space)
        return coords.astype(np.float32), _unify_duplicates(cluster_ids, inverse)

    def _umap(self, unique_rows: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            # umap-learn notes on import that its optional TensorFlow part is missing.
            warnings.filterwarnings("ignore", message="Tensorflow not installed")
            import umap

        n_neighbors = self.n_neighbors
        if n_neighbors >= unique_rows.shape[0]:
            n_neighbors = unique_rows.shape[0] - 1
            warnings.warn(
                f"n_neighbors={self.n_neighbors} is not below the {unique_rows.shape[0]} distinct "
                f"rows; using n_neighbors={n_neighbors}",
                UserWarning,
                stacklevel=4,
            )
        self.settings_.update(
            reducer="umap",
            n_neighbors=n_neighbors,
            n_components=self.n_components,
            min_dist=self.min_dist,
        )
        logger.info("UMAP on %d distinct rows of %d dims", *unique_rows.shape)
        with warnings.catch_warnings():
            # umap warns that a seed disables parallelism: that is the intent.
            warnings.filterwarnings("ignore", message=".*n_jobs.*overridden.*")
            # Separate clusters make a disconnected graph; UMAP handles it.
            warnings.filterwarnings("ignore", message="Graph is not fully connected")
            settings = dict(n_neighbors=n_neighbors, n_components=self.n_components,
                            min_dist=self.min_dist, random_state=self.random_state)
            init = "spectral" if unique_rows.shape[0] > self.n_components + 2 else "random"
            reducer = umap.UMAP(**settings, init=init)
            coords = reducer.fit_transform(unique_rows)

            # umap-learn 0.5 places more than 2 * n_components separate parts
            # of the neighbour graph with a spectral embedding of their
            # centroids that differs from run to run when the parts are far
            # apart. A deterministic start keeps such layouts repeatable.
            init = _components_init(reducer.graph_, unique_rows, self.n_components)
            if init is not None:
                self.settings_["umap_init"] = "per-component PCA (the neighbour graph is disconnected)"
                coords = umap.UMAP(**settings, init=init).fit_transform(unique_rows)
        if not np.isfinite(coords).all():
            raise RuntimeError("UMAP returned non-finite coordinates; try metric='euclidean' or pca_dims")
        return coords

    def _small_sample_coords(self, space: np.ndarray) -> np.ndarray:
        centered = space - space.mean(axis=0, keepdims=True)
        _, _, vt = np.linalg.svd(centered.astype(np.float64), full_matrices=False)
        coords = centered @ vt[: self.n_components].T
        if coords.shape[1] < self.n_components:
            pad = np.zeros((coords.shape[0], self.n_components - coords.shape[1]))
            coords = np.hstack([coords, pad])
        return coords

    def _hdbscan(self, cluster_space: np.ndarray) -> np.ndarray:
        n_rows = cluster_space.shape[0]
        requested = self.min_cluster_size
        size = requested if requested is not None else max(15, n_rows // 50)
        if size > n_rows // 2:
            clamped = max(2, n_rows // 2)
            if requested is not None:
                warnings.warn(
                    f"min_cluster_size={requested} is larger than half of the {n_rows} rows; "
                    f"using min_cluster_size={clamped}",
                    UserWarning,
                    stacklevel=4,
                )
            size = clamped
        min_samples = self.min_samples if self.min_samples is not None else size
        if min_samples > n_rows - 1:
            if self.min_samples is not None:
                warnings.warn(
                    f"min_samples={self.min_samples} is not below the {n_rows} rows; "
                    f"using min_samples={n_rows - 1}",
                    UserWarning,
                    stacklevel=4,
                )
            min_samples = n_rows - 1

        points = np.asarray(cluster_space, dtype=np.float64)
        epsilon = CLUSTER_EPSILON_FRACTION * np.sqrt(scores.total_variance(points))
        self.settings_.update(min_cluster_size=int(size), min_samples=int(min_samples),
                              cluster_selection_epsilon=float(epsilon))
        cluster_ids = _run_hdbscan(points, size=size, min_samples=min_samples, epsilon=epsilon)
        if epsilon > 0 and np.all(cluster_ids == NOISE_LABEL):
            # Every row is noise when hdbscan's epsilon merge selects the root
            # cluster (seen with hdbscan 0.8), so the clustering without the
            # merge is used instead.
            cluster_ids = _run_hdbscan(points, size=size, min_samples=min_samples, epsilon=0.0)
            self.settings_["cluster_selection_epsilon"] = 0.0
        return cluster_ids

    def _score_rows(self, rows, ids, x, label_codes, label_classes, pred_codes, pred_classes
                    ) -> ClusterScores:
        """Score the member set ``rows`` (positions among the kept rows)."""
        member_mask = np.zeros(x.shape[0], dtype=bool)
        member_mask[rows] = True
        result = ClusterScores(cluster_id=min(ids), size=int(rows.size),
                               members=self._kept_index[rows], cluster_ids=list(ids))
        result.acs, result.acs_reason = scores.acs_or_reason(x, member_mask, label_codes)
        result.point_share = _largest_point_share(x[rows])

        if label_codes is not None:
            try:
                result.label_entropy = scores.label_entropy(label_codes[rows], len(label_classes))
            except ValueError as err:
                result.label_entropy_reason = str(err)
            share, top = scores.prediction_concentration(label_codes[rows])
            result.top_label, result.top_label_share = label_classes[top], share
        if pred_codes is not None:
            share, top = scores.prediction_concentration(pred_codes[rows])
            result.prediction_concentration, result.top_prediction = share, pred_classes[top]
        else:
            result.prediction_reason = "no predictions given"
        if self.overall_accuracy_ is not None:
            result.accuracy = scores.accuracy(
                label_classes[label_codes[rows]], pred_classes[pred_codes[rows]]
            )
        else:
            result.accuracy_reason = "needs both labels and predictions"
        if label_codes is None:
            result.label_entropy_reason = "no labels given"
        return result

    def _merge_fragments(self, targets, cluster_ids) -> list:
        """Check that flagged clusters pull several classes, then merge fragments of one attractor.

        First, every flagged cluster must pass the "pulls several classes"
        check (:meth:`_check_pulled`), which needs the labels and predictions
        in ``targets``.

        Then fragments are merged. HDBSCAN can split one attractor into
        several dense fragments, for example one per captured class. A
        fragment of a single captured class may fail "mixed" or "pulls
        several classes" on its own, although the whole attractor passes
        both. The candidates for a merge are therefore the flagged clusters
        and the clusters that fail only those two checks, grouped by top
        prediction. Each group that contains a flagged cluster is scored again
        as one member set, and the union replaces its parts when it is still
        flagged. Otherwise the flagged clusters alone are tried as a union,
        and failing that they stay separate.
        """
        label_codes, pred_codes = targets[1], targets[3]
        for cluster in self.clusters_:
            if cluster.flagged:
                self._check_pulled(cluster, label_codes, pred_codes)

        groups: dict = {}
        for cluster in self.clusters_:
            if cluster.flagged or _fails_only(cluster, FRAGMENT_CHECKS):
                key = cluster.top_prediction if cluster.top_prediction is not None else cluster.cluster_id
                groups.setdefault(key, []).append(cluster)
        result = []
        for members in groups.values():
            flagged = [c for c in members if c.flagged]
            if not flagged:
                continue
            for candidate in (members, flagged):
                if len(candidate) == 1:
                    result.extend(candidate)
                    break
                merged = self._score_union(candidate, targets, cluster_ids)
                if merged.flagged:
                    result.append(merged)
                    break
            else:
                result.extend(flagged)
        return result

    def _score_union(self, clusters: list, targets, cluster_ids) -> ClusterScores:
        """Score and flag the union of ``clusters`` as one member set."""
        ids = sorted(i for c in clusters for i in c.cluster_ids)
        rows = np.flatnonzero(np.isin(cluster_ids, ids))
        merged = self._score_rows(rows, ids, *targets)
        self._compare_with_others(merged)
        self._flag(merged)
        if merged.flagged:
            self._check_pulled(merged, targets[1], targets[3])
        return merged

    def _flag_translated_copies(self, space, targets, cluster_ids, attractors) -> list:
        """Return the carriers of a translated-copy family as one attractor (without labels).

        Clusters already in an attractor are left out of the new one. When
        none is left, nothing is returned.
        """
        copies, reason = shifts.find_translated_copies(
            space, targets[0], cluster_ids,
            min_cosine=shifts.MIN_COSINE, max_length_ratio=shifts.MAX_LENGTH_RATIO,
            max_fit=self.copy_fit_threshold, random_state=self.random_state,
        )
        self.translated_copies_ = copies
        if reason is not None:
            self.unavailable_scores_["translated copies"] = reason
        if copies is None:
            return []
        already_flagged = {i for cluster in attractors for i in cluster.cluster_ids}
        carriers = sorted(set(copies.carriers) - already_flagged)
        if not carriers:
            return []
        logger.info("detection: clusters %s are translated copies of clusters %s",
                    copies.carriers, copies.partners)
        rows = np.flatnonzero(np.isin(cluster_ids, carriers))
        union = self._score_rows(rows, carriers, *targets)
        union.copies = copies
        self._compare_with_others(union)
        self._flag(union)
        return [union] if union.flagged else []

    def _check_pulled(self, cluster: ClusterScores, label_codes, pred_codes) -> None:
        """Unflag a cluster that pulls fewer than ``MIN_PULLED_CLASSES`` classes into its output.

        A class is pulled when at least ``MIN_PULLED_SHARE`` of the members
        belong to it and are given the top prediction, which is not their
        class. Two confusable classes (a shirt that looks like a T-shirt) meet
        at a decision boundary, where a cluster may be mixed, funnelled and
        wrong. An attractor draws inputs of several classes into one output.
        Needs labels and predictions; without them the check is skipped.
        """
        if label_codes is None or pred_codes is None:
            return
        position = {row: i for i, row in enumerate(self._kept_index)}
        rows = np.array([position[m] for m in cluster.members], dtype=np.int64)
        top = np.bincount(pred_codes[rows]).argmax()
        wrong = label_codes[rows][pred_codes[rows] == top]
        counts = np.bincount(wrong, minlength=top + 1)
        counts[top] = 0
        pulled = int(np.sum(counts >= MIN_PULLED_SHARE * rows.size))
        ok = pulled >= MIN_PULLED_CLASSES
        cluster.flagged = cluster.flagged and ok
        cluster.flag_reasons.append(
            f"pulls several classes: {'yes' if ok else 'no'} ({pulled} class(es) other than the "
            f"output with at least {MIN_PULLED_SHARE:.0%} of members each, vs {MIN_PULLED_CLASSES})"
        )

    def _accuracy_outside(self, cluster: ClusterScores) -> float:
        """Return the accuracy on the rows outside ``cluster`` (the overall accuracy if none)."""
        n_rows = self.embeddings_.shape[0]
        if cluster.size >= n_rows:
            return self.overall_accuracy_
        correct = self.overall_accuracy_ * n_rows - cluster.accuracy * cluster.size
        return float(correct / (n_rows - cluster.size))

    def _compare_with_others(self, cluster: ClusterScores) -> None:
        """Set the relative ACS of ``cluster`` against every cluster it does not contain."""
        others = [c.acs for c in self.clusters_ if not set(c.cluster_ids) & set(cluster.cluster_ids)]
        cluster.relative_acs, cluster.relative_acs_reason = scores.relative_acs_or_reason(
            cluster.acs, others
        )

    def _flag(self, cluster: ClusterScores) -> None:
        at_one_point = self.acs_reference_ == "all rows" and cluster.point_share is not None \
            and cluster.point_share >= POINT_MASS_SHARE
        point_detail = (f"; {cluster.point_share:.0%} of members share one embedding "
                        f"(at one point from {POINT_MASS_SHARE:.0%})") if at_one_point else ""
        checks = [("collapsed", at_one_point or (cluster.acs is not None and cluster.acs >= self.acs_threshold_),
                   f"ACS {_fmt(cluster.acs)} vs threshold {self.acs_threshold_}{point_detail}")]
        if self.acs_reference_ == "all rows":
            if cluster.relative_acs is None:
                detail = f"relative ACS not defined: {cluster.relative_acs_reason}"
            else:
                detail = (f"ACS {cluster.relative_acs:.1f} times the median of the other clusters "
                          f"vs {self.relative_acs_threshold}")
            checks.append(("stands out", at_one_point or (
                cluster.relative_acs is not None and cluster.relative_acs >= self.relative_acs_threshold),
                detail + point_detail))
        if cluster.label_entropy is not None:
            checks.append(("mixed", cluster.label_entropy >= self.entropy_threshold,
                           f"label entropy {cluster.label_entropy:.2f} vs {self.entropy_threshold}"))
        if cluster.prediction_concentration is not None:
            checks.append((
                "funnelled",
                cluster.prediction_concentration >= self.concentration_threshold,
                f"{cluster.prediction_concentration:.0%} predicted as {cluster.top_prediction!s} "
                f"vs {self.concentration_threshold:.0%}",
            ))
        if cluster.accuracy is not None:
            reference = self._accuracy_outside(cluster)
            checks.append((
                "wrong",
                is_wrong(cluster.accuracy, reference, self.accuracy_gap),
                f"accuracy {cluster.accuracy:.2f} vs {reference:.2f} outside the cluster "
                f"(wrong below {MAX_WRONG_ACCURACY} whatever the rest)",
            ))
        cluster.flagged = all(ok for _, ok, _ in checks)
        cluster.flag_reasons = [f"{name}: {'yes' if ok else 'no'} ({detail})"
                                for name, ok, detail in checks]
        if cluster.copies is not None:
            # The translated copies are the evidence, so the ACS checks are reported but not required.
            cluster.flagged = True
            cluster.flag_reasons = [
                "translated copies: yes ("
                + cluster.copies.describe(self.copy_fit_threshold, shifts.MIN_COSINE) + ")"
            ] + [reason[:-1] + "; not needed for translated copies)" for reason in cluster.flag_reasons]

    def _check_fitted(self):
        if not hasattr(self, "labels_"):
            raise RuntimeError("this AttractorDetector is not fitted yet; call fit(embeddings) first")


def is_wrong(accuracy: float, accuracy_outside: float, accuracy_gap: float) -> bool:
    """Return True when a member set counts as misclassified (the "wrong" criterion).

    Wrong means an accuracy at least ``accuracy_gap`` under the accuracy
    outside the set, or under ``MAX_WRONG_ACCURACY`` whatever the rest.
    """
    return accuracy <= accuracy_outside - accuracy_gap or accuracy < MAX_WRONG_ACCURACY


def _fails_only(cluster: ClusterScores, names: tuple) -> bool:
    """Return True when ``cluster`` failed at least one flagging check, all of them among ``names``."""
    failed = {reason.split(":", 1)[0] for reason in cluster.flag_reasons if ": no (" in reason}
    return bool(failed) and failed <= set(names)


def _damage(cluster: ClusterScores) -> float:
    """Rank attractors by how many members they get wrong, else by size and ACS."""
    if cluster.accuracy is not None:
        return cluster.size * (1.0 - cluster.accuracy)
    return cluster.size * (cluster.acs or 0.0)


def _components_init(graph, rows: np.ndarray, n_components: int) -> np.ndarray | None:
    """Return a deterministic UMAP start for a neighbour graph of many separate parts.

    Returns None when the graph has at most ``2 * n_components`` parts, where
    umap-learn's own spectral start is repeatable. Otherwise the parts' centroids
    are placed by their principal components, and each part's rows by their
    own principal components, shrunk to stay clear of the other parts.
    """
    from scipy.sparse.csgraph import connected_components

    n_parts, part_of = connected_components(graph, directed=False)
    if n_parts <= 2 * n_components:
        return None
    rows = np.asarray(rows, dtype=np.float64)
    centroids = np.stack([rows[part_of == part].mean(axis=0) for part in range(n_parts)])
    layout = _principal_coords(centroids, n_components)
    layout /= max(np.abs(layout).max(), 1e-12)
    gaps = np.linalg.norm(layout[:, None] - layout[None], axis=2)
    radius = gaps[gaps > 0].min() / 4 if np.any(gaps > 0) else 1.0

    init = np.empty((rows.shape[0], n_components))
    for part in range(n_parts):
        local = _principal_coords(rows[part_of == part], n_components)
        local *= radius / max(np.abs(local).max(), 1e-12)
        init[part_of == part] = layout[part] + local
    return init


def _principal_coords(x: np.ndarray, n_components: int) -> np.ndarray:
    """Project centred rows on their first principal axes, zero-padded to n_components columns."""
    centred = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:n_components].T
    if coords.shape[1] < n_components:
        coords = np.hstack([coords, np.zeros((coords.shape[0], n_components - coords.shape[1]))])
    return coords


def _run_hdbscan(points: np.ndarray, *, size: int, min_samples: int, epsilon: float) -> np.ndarray:
    import hdbscan

    clusterer = hdbscan.HDBSCAN(
        min_cluster_size=int(size),
        min_samples=int(min_samples),
        cluster_selection_epsilon=float(epsilon),
        allow_single_cluster=True,
    )
    return clusterer.fit_predict(points).astype(np.int64)


def _magnitude_scale(x: np.ndarray) -> float:
    """Return the power of two that brings the largest absolute value of ``x`` near 1.

    Returns 1.0, so that the embeddings stay untouched, when that value is 0 or
    lies within ``SAFE_MAGNITUDE``. UMAP's layout changes with any change of
    its input, even a rounding difference, so ordinary embeddings are not
    rescaled at all.
    """
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    low, high = SAFE_MAGNITUDE
    if peak == 0.0 or low <= peak <= high:
        return 1.0
    return float(2.0 ** np.round(np.log2(peak)))


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalise the rows of ``x``; all-zero rows stay zero.

    Each row is first divided by its largest absolute value, so that the norm
    neither overflows (values near the float32 maximum) nor underflows (values
    near the float32 minimum).
    """
    peaks = np.max(np.abs(x), axis=1, keepdims=True)
    x = np.divide(x, peaks, out=np.zeros_like(x), where=peaks > 0)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _largest_point_share(x: np.ndarray) -> float:
    """Return the share of rows of ``x`` equal to its most common row."""
    if x.shape[0] == 0:
        return 0.0
    _, inverse = _unique_rows(x)
    return float(np.bincount(inverse).max() / x.shape[0])


def _unique_rows(x: np.ndarray):
    """Return the distinct rows of ``x`` and the inverse map, via a byte view."""
    contiguous = np.ascontiguousarray(x)
    view = contiguous.view(np.dtype((np.void, contiguous.dtype.itemsize * contiguous.shape[1])))
    _, first, inverse = np.unique(view.ravel(), return_index=True, return_inverse=True)
    return contiguous[first], inverse.ravel()


def _unify_duplicates(cluster_ids: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """Give every copy of a row the cluster that most of its copies received."""
    if inverse.max() + 1 == inverse.shape[0]:
        return cluster_ids
    result = cluster_ids.copy()
    order = np.argsort(inverse, kind="stable")
    boundaries = np.flatnonzero(np.diff(inverse[order])) + 1
    for group in np.split(order, boundaries):
        if group.size > 1:
            values, counts = np.unique(cluster_ids[group], return_counts=True)
            result[group] = values[np.argmax(counts)]
    return result


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _plain(value):
    """Convert numpy scalars to Python ones for JSON."""
    if isinstance(value, np.generic):
        return value.item()
    return value
