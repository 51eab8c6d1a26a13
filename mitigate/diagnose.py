"""Root-cause diagnosis of a flagged attractor from its scores and probe evidence."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CAUSES = (
    "spurious_correlation",
    "representational_collapse",
    "gradient_starvation",
    "data_artifact",
    "undetermined",
)

# A located region covering more than this share of the image is treated as a
# diffuse pattern (an artifact such as scanner noise), not an object feature.
LOCALIZED_AREA = 0.25
# Training-data correlation: the feature is on at least CORRELATED_RATE of one
# class's training images and at most UNCORRELATED_RATE of the others'.
CORRELATED_RATE = 0.5
UNCORRELATED_RATE = 0.1
# Embeddings whose effective rank is below this share of their width count as
# collapsed.
COLLAPSED_RANK_SHARE = 0.1


@dataclass
class Diagnosis:
    """A root cause and the evidence behind it, in plain sentences."""

    cause: str
    evidence: list = field(default_factory=list)


def effective_rank(embeddings: np.ndarray) -> float:
    """Return exp(entropy) of the normalised singular values (RankMe).

    Range [1, min(n_samples, n_dims)]; lower means a more collapsed space.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    singular = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    total = singular.sum()
    if total <= 0:
        return 1.0
    p = singular / total
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def training_presence_by_class(presence: np.ndarray, labels: np.ndarray) -> dict:
    """Return ``{class: share of its training images that carry the feature}``."""
    return {int(k): float(presence[labels == k].mean()) for k in np.unique(labels)}


def diagnose_image_attractor(
    cluster,
    probe,
    *,
    image_shape: tuple,
    presence_by_class: dict | None,
    class_names,
    rank_share: float,
) -> Diagnosis:
    """Name the root cause of one image attractor.

    Parameters
    ----------
    cluster : ClusterScores
        The flagged cluster.
    probe : ImageProbeResult or None
    image_shape : (height, width)
    presence_by_class : dict or None
        Share of training images per class that carry the located feature.
    rank_share : float
        Effective rank of the audit embeddings over their width.
    """
    evidence = []
    name = _namer(class_names)
    if probe is not None and probe.causal:
        area = probe.box[2] * probe.box[3] / (image_shape[0] * image_shape[1])
        evidence.append(
            f"filling the region {list(probe.box)} (top, left, height, width) moves "
            f"{probe.exit_rate:.0%} of members out of the cluster; pasting it moves "
            f"{probe.entry_rate:.0%} of non-members in (control location: {probe.control_entry_rate:.0%})"
        )
        correlated = _correlated_class(presence_by_class)
        if correlated is not None:
            rate, others = presence_by_class[correlated], _max_other(presence_by_class, correlated)
            evidence.append(
                f"the feature is on {rate:.0%} of training images of class {name(correlated)} "
                f"and at most {others:.0%} of any other class"
            )
            if cluster.top_prediction is not None:
                evidence.append(
                    f"{cluster.prediction_concentration:.0%} of members are predicted as "
                    f"{name(cluster.top_prediction)}, whatever their class"
                )
            return Diagnosis("spurious_correlation", evidence)
        if area <= LOCALIZED_AREA:
            evidence.append(
                f"the region covers {area:.0%} of the image (a localized feature), but its "
                "correlation with a class in training could not be measured"
            )
            return Diagnosis("spurious_correlation", evidence)
        evidence.append(f"the region covers {area:.0%} of the image: a diffuse pattern, not an object part")
        return Diagnosis("data_artifact", evidence)

    if probe is not None:
        evidence.append(
            f"no located region explains membership (exit {probe.exit_rate:.0%}, entry "
            f"{probe.entry_rate:.0%}, control {probe.control_entry_rate:.0%})"
        )
    if rank_share < COLLAPSED_RANK_SHARE:
        evidence.append(f"the embeddings use {rank_share:.1%} of their width (effective rank)")
        return Diagnosis("representational_collapse", evidence)
    evidence.append("the evidence matches none of the known mechanisms")
    return Diagnosis("undetermined", evidence)


def _correlated_class(presence_by_class: dict | None):
    if not presence_by_class or len(presence_by_class) < 2:
        return None
    top = max(presence_by_class, key=presence_by_class.get)
    if presence_by_class[top] >= CORRELATED_RATE and _max_other(presence_by_class, top) <= UNCORRELATED_RATE:
        return top
    return None


def _max_other(presence_by_class: dict, excluded) -> float:
    return max(rate for cls, rate in presence_by_class.items() if cls != excluded)


def _namer(class_names):
    def name(code):
        if class_names is not None and 0 <= int(code) < len(class_names):
            return f"{class_names[int(code)]!r}"
        return str(code)
    return name
