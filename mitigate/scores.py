"""Per-cluster scores: one implementation, used before and after retraining.

Every score states its range and which direction is worse. Scores that cannot
be computed (too few members, a single class) are returned as ``None`` by the
``*_or_reason`` helpers together with the reason, so that no NaN or infinity
reaches a report.
"""

from __future__ import annotations

import numpy as np

from mitigate.constants import ACS_FLOOR

# Minimum number of other clusters whose median ACS makes a meaningful
# comparison in ``relative_acs``.
MIN_OTHER_CLUSTERS = 2

# Rows per block in total_variance: 16,384 rows of 384 dims are 48 MiB in float64.
VARIANCE_BLOCK_ROWS = 16_384
# Groups with fewer rows are left out of worst-group accuracy: 0.5 / sqrt(25)
# = 0.1, so a group's accuracy is known to about 10 points, finer than the
# 15 to 20 point gains that verification requires.
MIN_GROUP_SIZE = 25


def total_variance(embeddings: np.ndarray) -> float:
    """Return the trace of the (biased) covariance matrix, in float64.

    Equals half the mean squared Euclidean distance over all ordered pairs of
    rows, including each row paired with itself. Two passes over blocks of
    ``VARIANCE_BLOCK_ROWS`` rows (the mean, then the centred squares), so a
    float32 or memory-mapped input is never copied whole into float64.
    """
    x = np.asarray(embeddings)
    n_rows = x.shape[0]
    starts = range(0, n_rows, VARIANCE_BLOCK_ROWS)
    mean = sum(x[start:start + VARIANCE_BLOCK_ROWS].sum(axis=0, dtype=np.float64) for start in starts)
    mean = mean / n_rows
    squares = 0.0
    for start in starts:
        centered = x[start:start + VARIANCE_BLOCK_ROWS].astype(np.float64) - mean
        squares += np.einsum("ij,ij->", centered, centered)
    return float(squares / n_rows)


def attractor_collapse_score(
    embeddings: np.ndarray, members: np.ndarray, labels: np.ndarray | None = None
) -> float:
    """Compute the Attractor Collapse Score (ACS) of a member set.

    Without labels: ``ACS(S) = mean_{i,j in X} ||x_i - x_j||^2 /
    mean_{i,j in S} ||x_i - x_j||^2 = tr(Cov(X)) / tr(Cov(S))``, where X is every
    row of ``embeddings`` (the reference set, for example the whole audit
    split) and S the member rows.

    With labels, the reference is class-matched: X is replaced by the mixture
    of the reference set's classes in the proportions they have in S, whose
    spread is ``sum_k w_k tr(Cov(X_k)) + sum_k w_k ||mu_k - mu_w||^2`` (exact,
    from the class means ``mu_k`` and spreads of X). A cluster that is simply
    one whole class then scores about 1, and the score measures how much
    tighter the members sit than inputs of the same classes in general: the
    signature of an attractor that pulls several classes together.

    Range [0, 1 / ACS_FLOOR]; higher is worse. A random subset of X scores
    about 1 under either reference; members k times closer together than the
    reference score about k**2. The value is invariant to translation,
    rotation and uniform scaling of the embeddings.

    Parameters
    ----------
    embeddings : ndarray of shape (n_samples, n_dims)
        The reference set, in the model's original embedding space (not UMAP).
    members : ndarray of shape (n_samples,) of bool, or of int indices
        The member set S; at least 2 members.
    labels : ndarray of shape (n_samples,) of int, optional
        Class codes of every row, for the class-matched reference.

    Returns
    -------
    float
        The ACS. When the members' spread is below ``ACS_FLOOR`` times the
        reference spread (for example identical members) the denominator is
        clamped there, so the value is capped at ``1 / ACS_FLOOR``.

    Raises
    ------
    ValueError
        If S has fewer than 2 members, or the reference has zero spread (all
        rows equal) and no labels show that the members come from at least
        2 classes, where the ratio is not defined. With such labels the
        members are identical inputs of different classes, the strongest
        collapse there is, and the value is the cap.

    Notes
    -----
    The source wording of ACS ("average distance inside the cluster over the
    average distance outside, normalised by the intra-cluster variance") is
    inverted when read literally: a tight cluster would score below 1. This
    formula keeps its intent (higher means a stronger pull) and uses squared
    distances because their mean has the exact closed form above, which costs
    O(n * d) rather than O(n**2 * d) and needs no pair sampling.
    """
    x = np.asarray(embeddings)
    member_rows = _member_rows(members, x.shape[0])
    if member_rows.size < 2:
        raise ValueError(f"ACS needs at least 2 members, got {member_rows.size}")
    if labels is None:
        reference = total_variance(x)
    else:
        reference = _class_matched_variance(x, np.asarray(labels), member_rows)
    if reference <= 0.0:
        # A zero reference means every member sits at one point. Inputs of several classes
        # there are as collapsed as members can be; one class alone gives 0 / 0.
        if labels is not None and np.unique(np.asarray(labels)[member_rows]).size >= 2:
            return 1.0 / ACS_FLOOR
        raise ValueError("ACS is not defined: every embedding is identical (zero spread)")
    spread = total_variance(x[member_rows])
    return reference / max(spread, ACS_FLOOR * reference)


def _class_matched_variance(x: np.ndarray, labels: np.ndarray, member_rows: np.ndarray) -> float:
    """Spread of the reference classes mixed in the members' class proportions."""
    if labels.shape != (x.shape[0],):
        raise ValueError(f"labels have shape {labels.shape}, expected ({x.shape[0]},)")
    classes, counts = np.unique(labels[member_rows], return_counts=True)
    weights = counts / counts.sum()
    means, spreads = [], []
    for cls in classes:
        rows = x[labels == cls]
        means.append(rows.astype(np.float64).mean(axis=0))
        spreads.append(total_variance(rows))
    means = np.asarray(means)
    mixture_mean = weights @ means
    between = weights @ np.sum((means - mixture_mean) ** 2, axis=1)
    return float(weights @ np.asarray(spreads) + between)


def acs_or_reason(
    embeddings: np.ndarray, members: np.ndarray, labels: np.ndarray | None = None
) -> tuple[float | None, str | None]:
    """Return ``(acs, None)``, or ``(None, reason)`` where ACS is not defined."""
    try:
        return attractor_collapse_score(embeddings, members, labels), None
    except ValueError as err:
        return None, str(err)


def relative_acs(acs: float | None, other_acs: list) -> float:
    """Compare a cluster's ACS with the median ACS of the other clusters.

    ``relative ACS = ACS(S) / median_{C != S} ACS(C)``, all against the same
    reference set. Because the reference spread cancels, this equals the
    median spread of the other clusters over the spread of S. Range
    [0, infinity); 1 means as tight as a typical cluster, higher is worse.

    The plain ACS (no labels) cannot tell an attractor from a natural class,
    because every class cluster of a trained model is tighter than the whole
    set. An attractor is also tighter than the other clusters, which is what
    this ratio measures.

    Parameters
    ----------
    acs : float or None
        ACS of the member set S.
    other_acs : list of float or None
        ACS of every other cluster; None entries (ACS not defined) are skipped.

    Raises
    ------
    ValueError
        If ``acs`` is None, or fewer than ``MIN_OTHER_CLUSTERS`` other
        clusters have an ACS: a median of one value would compare S with a
        single, arbitrary cluster.
    """
    if acs is None:
        raise ValueError("relative ACS needs the cluster's ACS, which is not defined")
    others = np.array([value for value in other_acs if value is not None], dtype=np.float64)
    if others.size < MIN_OTHER_CLUSTERS:
        raise ValueError(
            f"relative ACS needs at least {MIN_OTHER_CLUSTERS} other clusters to compare with, "
            f"got {others.size}"
        )
    return float(acs / np.median(others))


def relative_acs_or_reason(acs: float | None, other_acs: list) -> tuple[float | None, str | None]:
    """Return ``(relative_acs, None)``, or ``(None, reason)`` where it is not defined."""
    try:
        return relative_acs(acs, other_acs), None
    except ValueError as err:
        return None, str(err)


def label_entropy(codes: np.ndarray, n_classes: int) -> float:
    """Compute the normalised Shannon entropy of the labels in a member set.

    ``H = -sum_k p_k log p_k / log(n_classes)``. Range [0, 1]: 0 when every
    member has one label, 1 when the labels are spread evenly over all
    ``n_classes``. For an attractor, higher is worse (it mixes classes).

    Raises
    ------
    ValueError
        If ``n_classes < 2`` (entropy is not defined for a single class) or
        ``codes`` is empty.
    """
    if n_classes < 2:
        raise ValueError("label entropy needs at least 2 classes in the labels")
    codes = np.asarray(codes)
    if codes.size == 0:
        raise ValueError("label entropy needs at least 1 member")
    counts = np.bincount(codes, minlength=n_classes).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    # max() turns the -0.0 of a single class into 0.0.
    return max(0.0, float(-(p * np.log(p)).sum() / np.log(n_classes)))


def prediction_concentration(codes: np.ndarray) -> tuple[float, int]:
    """Return the share of members given the most common prediction, and that prediction.

    Range [1 / n_classes, 1]. For an attractor, higher is worse: the model
    funnels its members into one output.
    """
    codes = np.asarray(codes)
    if codes.size == 0:
        raise ValueError("prediction concentration needs at least 1 member")
    counts = np.bincount(codes)
    top = int(np.argmax(counts))
    return float(counts[top] / codes.size), top


def accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Return the fraction of equal entries. Range [0, 1]; lower is worse."""
    labels = np.asarray(labels)
    if labels.size == 0:
        raise ValueError("accuracy needs at least 1 sample")
    return float(np.mean(labels == np.asarray(predictions)))


def group_accuracies(labels: np.ndarray, predictions: np.ndarray, groups: np.ndarray) -> dict:
    """Return ``{group: accuracy}`` for every group id present in ``groups``."""
    labels, predictions, groups = map(np.asarray, (labels, predictions, groups))
    result = {}
    for group in np.unique(groups):
        mask = groups == group
        result[int(group)] = accuracy(labels[mask], predictions[mask])
    return result


def worst_group_accuracy(labels: np.ndarray, predictions: np.ndarray, groups: np.ndarray,
                         min_size: int = MIN_GROUP_SIZE) -> float:
    """Return the minimum accuracy over groups of at least ``min_size`` rows.

    Range [0, 1]; lower is worse. A group of a few rows has an accuracy of
    0, 1/2 or 1 by chance; :data:`MIN_GROUP_SIZE` rows resolve a group's
    accuracy to one binomial standard error of at most 10 points. When no
    group is that large, every group counts.
    """
    accuracies = group_accuracies(labels, predictions, groups)
    sizes = dict(zip(*np.unique(np.asarray(groups), return_counts=True)))
    large = [value for group, value in accuracies.items() if sizes[group] >= min_size]
    return min(large or accuracies.values())


def small_groups(groups: np.ndarray, min_size: int = MIN_GROUP_SIZE) -> dict:
    """Return ``{group: rows}`` for the groups that :func:`worst_group_accuracy` leaves out."""
    ids, counts = np.unique(np.asarray(groups), return_counts=True)
    if not np.any(counts >= min_size):
        return {}
    return {int(g): int(n) for g, n in zip(ids, counts) if n < min_size}


def precision_recall_f1(found: np.ndarray, truth: np.ndarray) -> dict:
    """Score a found member set against a planted one (boolean masks of equal length)."""
    found = np.asarray(found, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    hits = int(np.sum(found & truth))
    precision = hits / found.sum() if found.sum() else 0.0
    recall = hits / truth.sum() if truth.sum() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


def _member_rows(members: np.ndarray, n_samples: int) -> np.ndarray:
    members = np.asarray(members)
    if members.dtype == bool:
        if members.shape != (n_samples,):
            raise ValueError(
                f"member mask has shape {members.shape}, expected ({n_samples},)"
            )
        return np.flatnonzero(members)
    rows = members.astype(np.int64).ravel()
    if rows.size and (rows.min() < 0 or rows.max() >= n_samples):
        raise ValueError(f"member indices must lie in [0, {n_samples}), got {rows.min()}..{rows.max()}")
    return np.unique(rows)
