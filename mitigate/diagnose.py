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
# A linear classifier needs n_classes - 1 directions to hold n_classes apart
# (the class means of a well-trained network span that many). Embeddings whose
# effective rank is below this share of n_classes - 1 are too narrow for the
# classes. Trained SmallCNNs with 64 units score 1.4 to 1.9 on Fashion-MNIST;
# 3-unit bottlenecks score at most 3 / 9 = 0.33.
COLLAPSED_RANK_PER_CLASS = 0.5
# A located region contains a label code (an easy feature that gives the label
# for most training images) when the region's pixels alone predict the
# training labels with at least this accuracy, and the model's output on the
# members follows the region's prediction for at least MEMBERS_FOLLOW of them.
# A feature tied to one class cannot reach it: it says nothing about the
# other classes.
LABEL_CODE_ACCURACY = 0.7
MEMBERS_FOLLOW = 0.5


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
    pattern_probe=None,
    region_evidence=None,
    effective_rank: float | None = None,
    n_classes: int | None = None,
) -> Diagnosis:
    """Name the root cause of one image attractor.

    The rules, in order; the first that holds names the cause:

    1. The embeddings' effective rank is below ``COLLAPSED_RANK_PER_CLASS``
       times ``n_classes - 1`` (needs ``effective_rank`` and ``n_classes``):
       representational collapse, because a space that narrow cannot hold
       the classes apart, whatever else the probes find.
    2. Adding and removing the members' shared pattern moves inputs in and
       out, and the pattern spreads over more than ``LOCALIZED_AREA`` of the
       image (needs ``pattern_probe``): data artifact.
    3. The occlusion probe is causal and its region covers more than
       ``LOCALIZED_AREA``: data artifact.
    4. Causal, and the region's pixels alone predict most training labels
       while the model's output on the members follows them (needs
       ``region_evidence``): gradient starvation, because an easy feature
       that codes the label was learned in place of the garments.
    5. Causal, and the feature is on at least ``CORRELATED_RATE`` of one
       class's training images and at most ``UNCORRELATED_RATE`` of any
       other's, or its training correlation could not be measured:
       spurious correlation. Measured and spread over several classes: data
       artifact (a mark on a subset of images, not a cue for one class).
    6. No causal region, and the effective rank is below
       ``COLLAPSED_RANK_SHARE`` of the width: representational collapse.
    7. Otherwise undetermined.

    Parameters
    ----------
    cluster : ClusterScores
        The flagged cluster.
    probe : ImageProbeResult or None
        Occlusion probe result.
    image_shape : (height, width)
    presence_by_class : dict or None
        Share of training images per class that carry the located feature.
    class_names : sequence of str or None
    rank_share : float
        Effective rank of the audit embeddings over their width.
    pattern_probe : PatternProbeResult, optional
        Result of :func:`mitigate.probes.probe_image_pattern`.
    region_evidence : RegionLabelEvidence, optional
        Result of :func:`mitigate.probes.region_label_evidence` for the
        occlusion probe's region.
    effective_rank : float, optional
        Effective rank of the audit embeddings (:func:`effective_rank`).
    n_classes : int, optional
        Number of classes the model separates.
    """
    evidence = []
    name = class_namer(class_names)
    image_area = image_shape[0] * image_shape[1]

    if effective_rank is not None and n_classes is not None and n_classes > 1:
        per_class = effective_rank / (n_classes - 1)
        if per_class < COLLAPSED_RANK_PER_CLASS:
            evidence.append(
                f"the embeddings have effective rank {effective_rank:.1f}, {per_class:.0%} of the "
                f"{n_classes - 1} directions that {n_classes} classes need to be held apart"
            )
            if cluster.top_prediction is not None:
                evidence.append(
                    f"{cluster.prediction_concentration:.0%} of members, from several classes, "
                    f"get one output ({name(cluster.top_prediction)})"
                )
            return Diagnosis("representational_collapse", evidence)

    if pattern_probe is not None and pattern_probe.causal and pattern_probe.spread > LOCALIZED_AREA:
        evidence.append(
            f"subtracting the members' shared pattern moves {pattern_probe.exit_rate:.0%} of members "
            f"out; adding it moves {pattern_probe.entry_rate:.0%} of non-members in (the same pattern "
            f"shifted: {pattern_probe.control_entry_rate:.0%})"
        )
        evidence.append(
            f"the pattern spreads over {pattern_probe.spread:.0%} of the image: a fixed pattern "
            "such as noise or a watermark, not an object part"
        )
        return Diagnosis("data_artifact", evidence)

    if probe is not None and probe.causal:
        return _diagnose_located(cluster, probe, evidence, name=name, image_area=image_area,
                                 presence_by_class=presence_by_class, region_evidence=region_evidence)

    if probe is not None:
        evidence.append(
            f"no located region explains membership (exit {probe.exit_rate:.0%}, entry "
            f"{probe.entry_rate:.0%}, control {probe.control_entry_rate:.0%})"
        )
    if pattern_probe is not None:
        evidence.append(
            f"no shared pattern explains membership (exit {pattern_probe.exit_rate:.0%}, entry "
            f"{pattern_probe.entry_rate:.0%}, control {pattern_probe.control_entry_rate:.0%})"
        )
    return diagnose_without_feature(evidence, rank_share)


def diagnose_without_feature(evidence: list, rank_share: float) -> Diagnosis:
    """Name the cause when no probe found a causal feature: collapse if the embeddings are narrow, else undetermined."""
    if rank_share < COLLAPSED_RANK_SHARE:
        evidence.append(f"the embeddings use {rank_share:.1%} of their width (effective rank)")
        return Diagnosis("representational_collapse", evidence)
    evidence.append("the evidence matches none of the known mechanisms")
    return Diagnosis("undetermined", evidence)


def _diagnose_located(cluster, probe, evidence, *, name, image_area, presence_by_class,
                      region_evidence) -> Diagnosis:
    """Apply rules 3 to 5 of :func:`diagnose_image_attractor`, for a causal occlusion probe."""
    area = probe.box[2] * probe.box[3] / image_area
    evidence.append(
        f"filling the region {list(probe.box)} (top, left, height, width) moves "
        f"{probe.exit_rate:.0%} of members out of the cluster; pasting it moves "
        f"{probe.entry_rate:.0%} of non-members in (control location: {probe.control_entry_rate:.0%})"
    )
    if area > LOCALIZED_AREA:
        evidence.append(f"the region covers {area:.0%} of the image: a diffuse pattern, not an object part")
        return Diagnosis("data_artifact", evidence)

    if region_evidence is not None and region_evidence.accuracy >= LABEL_CODE_ACCURACY \
            and region_evidence.member_agreement >= MEMBERS_FOLLOW:
        evidence.append(
            f"the region's pixels alone predict {region_evidence.accuracy:.0%} of training labels "
            f"(always guessing the most common class: {region_evidence.majority_rate:.0%}): "
            "an easy feature that codes the label"
        )
        evidence.append(
            f"the model's output on {region_evidence.member_agreement:.0%} of members is the class "
            "that the region codes, not the garment"
        )
        return Diagnosis("gradient_starvation", evidence)

    correlated = correlated_class(presence_by_class)
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
    if presence_by_class:
        top = max(presence_by_class, key=presence_by_class.get)
        evidence.append(
            f"the feature is on {presence_by_class[top]:.0%} of training images of class {name(top)} "
            f"and up to {_max_other(presence_by_class, top):.0%} of another class: a mark on a "
            "subset of several classes, not a cue for one class"
        )
        return Diagnosis("data_artifact", evidence)
    evidence.append(
        f"the region covers {area:.0%} of the image (a localized feature), but its "
        "correlation with a class in training could not be measured"
    )
    return Diagnosis("spurious_correlation", evidence)


def correlated_class(presence_by_class: dict | None):
    """Return the class that carries the feature in training while the others do not, or None."""
    if not presence_by_class or len(presence_by_class) < 2:
        return None
    top = max(presence_by_class, key=presence_by_class.get)
    if presence_by_class[top] >= CORRELATED_RATE and _max_other(presence_by_class, top) <= UNCORRELATED_RATE:
        return top
    return None


def _max_other(presence_by_class: dict, excluded) -> float:
    return max(rate for cls, rate in presence_by_class.items() if cls != excluded)


def class_namer(class_names):
    """Return a function that formats a class code as its quoted name, or the code when unnamed."""
    def name(code):
        if class_names is not None and 0 <= int(code) < len(class_names):
            return f"{class_names[int(code)]!r}"
        return str(code)
    return name


@dataclass
class ImageEvidence:
    """Every piece of evidence gathered for one image attractor (no ground truth involved).

    Attributes
    ----------
    probe : ImageProbeResult
        Occlusion attribution and counterfactual probes of the located region.
    pattern_probe : PatternProbeResult
        Probes with the members' shared additive pattern.
    presence_by_class : dict or None
        Share of training images per class that carry the located region's
        content; None when the region is not causal.
    region_evidence : RegionLabelEvidence or None
        How well the located region alone predicts the training labels; None
        when the region is not causal.
    effective_rank : float
        Effective rank of the audit embeddings.
    rank_share : float
        ``effective_rank`` over the embedding width.
    """

    probe: object
    pattern_probe: object
    presence_by_class: dict | None
    region_evidence: object
    effective_rank: float
    rank_share: float


def investigate_image_attractor(
    cluster,
    *,
    detector,
    audit_images: np.ndarray,
    audit_labels: np.ndarray,
    audit_embeddings: np.ndarray,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    embed,
    class_names,
    cell: int | None = None,
    fill: float = 0.0,
    max_probe: int = 200,
    seed: int = 0,
) -> tuple[Diagnosis, ImageEvidence]:
    """Probe one flagged attractor, gather the training-data evidence and name its root cause.

    Runs the occlusion probe (:func:`mitigate.probes.probe_image_cluster`),
    the pattern probe (:func:`mitigate.probes.probe_image_pattern`), and,
    when the occlusion probe locates a causal region, the training-data
    presence of that region's content and its label information
    (:func:`mitigate.probes.region_label_evidence`). Then applies
    :func:`diagnose_image_attractor`.

    Parameters
    ----------
    cluster : ClusterScores
        A flagged attractor of ``detector``.
    detector : AttractorDetector
        Fitted on ``audit_embeddings``; its ``assign`` places edited inputs.
    audit_images : ndarray of shape (n, C, H, W)
    audit_labels : ndarray of shape (n,) of int
    audit_embeddings : ndarray of shape (n, n_dims)
    train_images : ndarray of shape (n_train, C, H, W)
    train_labels : ndarray of shape (n_train,) of int
    embed : callable
        Images to embeddings with the audited model and layer.
    class_names : sequence of str or None
    cell : int, optional
        Occlusion window side in pixels; None uses a seventh of the image side.
    fill : float
        Background pixel value used to fill occluded regions.
    max_probe : int
        Most members (and non-members) probed.
    seed : int
        Seeds the probe samples.
    """
    from mitigate.probes import (
        feature_presence,
        probe_image_cluster,
        probe_image_pattern,
        region_label_evidence,
    )

    side = audit_images.shape[-1]
    common = dict(embed=embed, assign=detector.assign, max_probe=max_probe, seed=seed)
    probe = probe_image_cluster(
        audit_images, detector.labels_, cluster.cluster_ids, audit_embeddings,
        cell=cell or max(1, side // 7), fill=fill, labels=audit_labels, **common,
    )
    pattern_probe = probe_image_pattern(audit_images, detector.labels_, cluster.cluster_ids,
                                        audit_labels, **common)

    presence = region = None
    if probe.causal:
        carried = feature_presence(train_images, probe.box, probe.patch, fill=fill)
        presence = training_presence_by_class(carried, train_labels)
        if cluster.top_prediction is not None:
            members = audit_images[np.isin(detector.labels_, cluster.cluster_ids)]
            region = region_label_evidence(train_images, train_labels, probe.box, members,
                                           int(cluster.top_prediction), seed=seed)

    rank = effective_rank(audit_embeddings)
    evidence = ImageEvidence(probe, pattern_probe, presence, region, rank, rank / audit_embeddings.shape[1])
    diagnosis = diagnose_image_attractor(
        cluster, probe, image_shape=audit_images.shape[-2:], presence_by_class=presence,
        class_names=class_names, rank_share=evidence.rank_share, pattern_probe=pattern_probe,
        region_evidence=region, effective_rank=rank, n_classes=len(np.unique(train_labels)),
    )
    return diagnosis, evidence
