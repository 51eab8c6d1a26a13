"""Assembly of the audit: snapshots, verification checks, attractor records, report files.

The fields written here are the ones documented in ``mitigate/schema/report.schema.json``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

from mitigate import __version__, scores
from mitigate.constants import NOISE_LABEL
from mitigate.detect import MAX_WRONG_ACCURACY, is_wrong

logger = logging.getLogger(__name__)

LIBRARIES = ("torch", "numpy", "scikit-learn", "hdbscan", "umap-learn", "numba", "accelerate",
             "datasets", "pyarrow", "safetensors", "transformers")
# An attractor after retraining is "the same" as one before when at least this
# share of its members were members before.
SAME_ATTRACTOR_OVERLAP = 0.5


def environment_info() -> dict:
    """Return Python, platform, thread count and library versions for the report.

    The thread count is torch's intra-op thread count when torch is loaded
    (training and extraction), else numba's (UMAP's parallel code), else the
    number of CPUs. A detection without a model therefore does not load torch.
    """
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "threads": _thread_count(),
        "libraries": versions,
    }


def _thread_count() -> int:
    if "torch" in sys.modules:
        return int(sys.modules["torch"].get_num_threads())
    if "numba" in sys.modules:
        return int(sys.modules["numba"].get_num_threads())
    return os.cpu_count() or 1


def new_audit(recipe, data, baseline_info: dict, environment: dict, *,
              n_inputs: tuple[int, int] | None = None) -> dict:
    """Start the audit dict with the fields known before retraining.

    ``n_inputs`` is ``(n_train, n_audit)`` for data without image arrays
    (text); by default the counts come from ``data.train_images`` and
    ``data.audit_images``.
    """
    if n_inputs is None:
        n_inputs = (data.train_images.shape[0], data.audit_images.shape[0])
    return {
        "schema_version": "1.0",
        "tool": {"name": "mitigate", "version": __version__},
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "kind": "run",
        "recipe": {"name": recipe.name, "path": str(recipe.path) if recipe.path else None,
                   "settings": recipe.settings},
        "data": {
            "source": data.splits.source,
            "n_train": int(n_inputs[0]),
            "n_audit": int(n_inputs[1]),
            "class_names": [str(name) for name in data.splits.class_names],
        },
        "model": {
            "factory": recipe["model"]["factory"],
            "layer": recipe["model"]["layer"],
            "baseline_weights": "baseline/model.safetensors",
            "retrained_weights": None,
        },
        "training": {"baseline": baseline_info, "retrained": None},
        "detection_settings": {},
        "environment": environment,
        "before": None,
        "after": None,
        "attractors": [],
        "verification": None,
        "verdict": "no attractor found",
        "verdict_reasons": [],
        "evaluation": None,
        "log_file": "run.log",
    }


def cluster_snapshot(state: dict, labels, groups, group_definition: str) -> dict:
    """Return accuracy, worst-group accuracy and per-cluster scores of one model."""
    detector = state["detector"]
    predictions = state["predictions"]
    return {
        "accuracy": scores.accuracy(labels, predictions),
        "accuracy_reason": None,
        "worst_group_accuracy": scores.worst_group_accuracy(labels, predictions, groups),
        "worst_group_reason": None,
        "group_definition": group_definition + _small_groups_note(groups),
        "n_noise": int(np.sum(detector.labels_ == NOISE_LABEL)),
        "unavailable_scores": dict(detector.unavailable_scores_),
        "clusters": [_cluster_dict(c) for c in detector.clusters_],
    }


def _small_groups_note(groups) -> str:
    """Say which groups worst-group accuracy leaves out for their size, if any."""
    small = scores.small_groups(groups)
    if not small:
        return ""
    return (f"; {len(small)} group(s) of fewer than {scores.MIN_GROUP_SIZE} rows left out of "
            f"worst-group accuracy ({sum(small.values())} rows in all)")


def _cluster_dict(cluster) -> dict:
    record = cluster.to_dict()
    record.pop("members")
    return record


def verification_checks(recipe, before, after, findings, labels, groups):
    """Compute every check behind the verdict, with the same scores as before retraining.

    Returns
    -------
    checks : list of dict
        ``{name, passed, detail, before, after, limit}`` per check.
    new_attractors : list of dict
        Attractors flagged after retraining that were not there before.
    """
    settings = recipe["verify"]
    threshold = before["detector"].acs_threshold_
    checks = []
    for index, finding in enumerate(findings):
        acs_before = finding.cluster.acs
        acs_after, reason = scores.acs_or_reason(after["embeddings"], finding.mask, labels)
        passed = acs_after is not None and acs_after < threshold
        detail = (f"ACS of the same {finding.mask.sum()} members: {_f(acs_before)} before, "
                  f"{_f(acs_after) if acs_after is not None else 'n/a (' + reason + ')'} after "
                  f"(threshold {threshold})")
        name = f"attractor {index}: member-set ACS below threshold"
        if index > 0:
            # Only findings[0] is remedied. The others must stop being attractors: tight
            # enough to pass the ACS check, or no longer misclassified as a group.
            name = f"attractor {index}: member-set ACS below threshold or members no longer wrong"
            if not passed:
                passed, wrong_detail = _no_longer_wrong(before["detector"], after, finding.mask, labels)
                detail += f"; {wrong_detail}"
        checks.append(_check(name, passed, detail, acs_before, acs_after, threshold))

    wga = [scores.worst_group_accuracy(labels, s["predictions"], groups) for s in (before, after)]
    gain = settings["min_worst_group_gain"]
    checks.append(_check(
        "worst-group accuracy rose", wga[1] - wga[0] >= gain,
        f"worst-group accuracy {wga[0]:.1%} before, {wga[1]:.1%} after "
        f"(needs a gain of at least {gain * 100:.0f} points)", wga[0], wga[1], gain,
    ))
    accuracy = [scores.accuracy(labels, s["predictions"]) for s in (before, after)]
    drop = settings["max_accuracy_drop"]
    checks.append(_check(
        "overall accuracy kept", accuracy[0] - accuracy[1] <= drop,
        f"overall accuracy {accuracy[0]:.1%} before, {accuracy[1]:.1%} after "
        f"(may fall by at most {drop * 100:.0f} point(s))", accuracy[0], accuracy[1], drop,
    ))

    persisting, new = _match_after(before, after, findings)
    checks.append(_check(
        "attractor no longer flagged", not persisting,
        "no cluster flagged after retraining shares most of its members with a found attractor"
        if not persisting else f"still flagged after retraining: clusters {persisting}",
        None, None, None,
    ))
    checks.append(_check(
        "no new attractor", not new,
        "detection after retraining flags no new attractor" if not new
        else f"{len(new)} new attractor(s) after retraining: clusters {[a['cluster_id'] for a in new]}",
        None, float(len(new)), 0.0,
    ))
    return checks, new


def _no_longer_wrong(detector, after, mask, labels) -> tuple[bool, str]:
    """Apply the detector's "wrong" criterion to a member set under the retrained model.

    Returns (passed, detail). Passed means the set is no longer wrong (see
    :func:`mitigate.detect.is_wrong`), so it no longer meets the attractor
    definition, whatever its ACS.
    """
    correct = np.asarray(after["predictions"]) == np.asarray(labels)
    inside = float(correct[mask].mean())
    outside = float(correct[~mask].mean()) if (~mask).any() else inside
    passed = not is_wrong(inside, outside, detector.accuracy_gap)
    verb = "no longer" if passed else "still"
    return passed, (f"its members are {verb} misclassified as a group: accuracy {inside:.1%} after, "
                    f"{outside:.1%} outside them (wrong when under {MAX_WRONG_ACCURACY:.0%} or "
                    f"{detector.accuracy_gap * 100:.0f} points under the rest)")


def _match_after(before, after, findings):
    found = np.zeros(before["embeddings"].shape[0], dtype=bool)
    for finding in findings:
        found |= finding.mask
    persisting, new = [], []
    for cluster in after["detector"].attractors_:
        overlap = found[cluster.members].mean()
        if overlap >= SAME_ATTRACTOR_OVERLAP:
            persisting.append(cluster.cluster_id)
        else:
            new.append({"cluster_id": cluster.cluster_id, "size": cluster.size, "acs": cluster.acs})
    return persisting, new


def _check(name, passed, detail, before, after, limit) -> dict:
    return {"name": name, "passed": bool(passed), "detail": detail,
            "before": _num(before), "after": _num(after), "limit": _num(limit)}


def reach_mask(finding, cluster_labels: np.ndarray) -> np.ndarray:
    """Return the attractor's reach: its members and every cluster that its feature keeps together.

    The members are the flagged cluster, the set whose ACS is measured before
    and after. A spurious feature can also keep inputs of other classes
    together in clusters of their own: footwear that carries the square sits apart from
    the top-wear that the square funnels into the attractor. The probe lists
    those clusters (``feature_clusters``: removing the feature moves at least
    ``EXIT_RATE`` of their members out), and the reach adds them. It equals
    the member set when the probe found no other such cluster.
    """
    reach = finding.mask.copy()
    if finding.probe is not None and finding.probe.feature_clusters:
        reach |= np.isin(cluster_labels, finding.probe.feature_clusters)
    return reach


def attractor_record(index, finding, before, after, labels, data, is_primary, checks) -> dict:
    """Return the report.json record of one attractor."""
    cluster = finding.cluster
    names = data.splits.class_names
    members = np.flatnonzero(finding.mask)
    classes, counts = np.unique(labels[members], return_counts=True)
    acs_after, reason = (None, "not retrained")
    accuracy_after = None
    if after is not None:
        acs_after, reason = scores.acs_or_reason(after["embeddings"], finding.mask, labels)
        accuracy_after = scores.accuracy(labels[members], after["predictions"][members])
    probe = finding.probe.to_dict() if finding.probe is not None else None
    reach = reach_mask(finding, before["detector"].labels_)
    if probe is not None and finding.probe.feature_clusters:
        probe["extended_member_count"] = int(reach.sum())
    reach_rows = np.flatnonzero(reach)
    verified = None
    if is_primary and after is not None:
        verified = all(c["passed"] for c in checks)
    record = {
        "id": index,
        "cluster_id": cluster.cluster_id,
        "cluster_ids": [int(i) for i in cluster.cluster_ids],
        "member_count": int(members.size),
        "member_ids": [int(i) for i in members],
        "reach_member_count": int(reach_rows.size),
        "reach_member_ids": [int(i) for i in reach_rows],
        "classes": {str(names[k]): int(n) for k, n in zip(classes, counts)},
        "acs_before": _num(cluster.acs),
        "acs_after": _num(acs_after),
        "acs_after_reason": None if acs_after is not None else reason,
        "label_entropy": _num(cluster.label_entropy),
        "prediction_concentration": _num(cluster.prediction_concentration),
        "top_prediction": _label(cluster.top_prediction, names),
        "accuracy_before": _num(cluster.accuracy),
        "accuracy_after": _num(accuracy_after),
        "probe": probe,
        "cause": finding.diagnosis.cause,
        "cause_evidence": list(finding.diagnosis.evidence),
        "remedy": finding.choice.remedy if is_primary else None,
        "remedy_reason": finding.choice.reason if is_primary else
        "only the strongest attractor is remedied in one run",
        "alternatives": list(finding.choice.alternatives),
        "verified": verified,
    }
    record["summary"] = _summary(record, names)
    return record


def _summary(record: dict, names) -> str:
    classes = sorted(record["classes"].items(), key=lambda item: -item[1])
    total = record["member_count"]
    shown = ", ".join(f"{name} {count / total:.0%}" for name, count in classes[:4])
    text = (f"{total} audit inputs from {len(classes)} classes ({shown}) sit in one cluster; "
            f"{_pct(record['prediction_concentration'])} of them are predicted as "
            f"{record['top_prediction']!s}, and their accuracy is {_pct(record['accuracy_before'])}.")
    probe = record["probe"]
    if probe and probe.get("box"):
        text += (f" Filling the region {probe['box']} moves {_pct(probe['exit_rate'])} of members out; "
                 f"pasting it moves {_pct(probe['entry_rate'])} of other inputs in.")
    elif probe and probe.get("token"):
        text += (f" Deleting the word {probe['token']!r} moves {_pct(probe['exit_rate'])} of members out; "
                 f"inserting it moves {_pct(probe['entry_rate'])} of other inputs in.")
    text += f" Cause: {record['cause'].replace('_', ' ')}."
    if record["remedy"]:
        text += f" Remedy: {record['remedy'].replace('_', ' ')}."
    if record["acs_after"] is not None:
        outcome = {True: "verified", False: "not verified", None: "not checked"}[record["verified"]]
        text += f" ACS {record['acs_before']:.2f} before, {record['acs_after']:.2f} after: {outcome}."
    return text


def write_report(out_dir: Path, audit: dict, before, after, findings, data, *,
                 text_arrays: dict | None = None) -> None:
    """Validate the audit and write report.json, report.html and report.md atomically.

    Under ``accelerate launch`` only the main process writes.

    ``text_arrays`` contains ``member_texts`` and ``highlight_tokens`` (one list
    of str per attractor) for a text model; they replace the image figures.
    """
    from mitigate.extract import is_main_process
    from mitigate.files import write_json, write_text
    from mitigate.report import render_html, render_markdown, validate_report

    if not is_main_process():
        return
    validate_report(audit)
    arrays = _figure_arrays(before, after, findings, data, text_arrays)
    html = render_html(audit, arrays)
    markdown = render_markdown(audit)
    # report.json goes last: its presence marks a finished run.
    write_text(out_dir / "report.html", html)
    write_text(out_dir / "report.md", markdown)
    write_json(out_dir / "report.json", audit)
    logger.info("wrote %s (verdict: %s)", out_dir / "report.html", audit["verdict"])
    log_scores_to_tracker(audit, out_dir / "tracking")


def tracked_scores(audit: dict) -> dict:
    """Return the audit's before/after scores as flat tracker values, leaving out nulls.

    Keys are ``audit/accuracy_before``, ``audit/worst_group_accuracy_after``,
    ``audit/A<id>/member_acs_before`` and the like, plus the verdict as text
    under ``audit/verdict``.
    """
    values = {"audit/verdict": audit["verdict"], "audit/n_attractors": len(audit["attractors"])}
    for side in ("before", "after"):
        snapshot = audit.get(side)
        if snapshot:
            values[f"audit/accuracy_{side}"] = snapshot["accuracy"]
            values[f"audit/worst_group_accuracy_{side}"] = snapshot["worst_group_accuracy"]
    for attractor in audit["attractors"]:
        prefix = f"audit/A{attractor['id']}"
        values[f"{prefix}/member_acs_before"] = attractor["acs_before"]
        values[f"{prefix}/member_acs_after"] = attractor["acs_after"]
        values[f"{prefix}/member_accuracy_before"] = attractor["accuracy_before"]
        values[f"{prefix}/member_accuracy_after"] = attractor["accuracy_after"]
    return {key: value for key, value in values.items() if value is not None}


def log_scores_to_tracker(audit: dict, project_dir: Path) -> None:
    """Send the scores of a ``run`` audit to the tracker named by the recipe's [train] log_with.

    Training losses go to the same tracker run ("mitigate" under
    ``project_dir``), so the two show up side by side. Nothing is logged
    for detection-only audits or when log_with is "none".
    """
    recipe = audit.get("recipe") or {}
    log_with = recipe.get("settings", {}).get("train", {}).get("log_with", "none")
    if audit["kind"] != "run" or log_with in (None, "none"):
        return
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    # No mixed_precision argument: the process-wide Accelerate state of an
    # earlier training run is reused as it is.
    project = ProjectConfiguration(project_dir=str(project_dir))
    accelerator = Accelerator(log_with=log_with, project_config=project)
    accelerator.init_trackers("mitigate")
    accelerator.log(tracked_scores(audit), step=0)
    accelerator.end_training()
    logger.info("logged the audit scores to %s under %s", log_with, project_dir)


def _figure_arrays(before, after, findings, data, text_arrays=None) -> dict:
    arrays = {
        "coords_before": before["detector"].coords_,
        "clusters_before": before["detector"].labels_,
        "labels": data.splits.audit_labels,
        "coords_after": after["detector"].coords_ if after else None,
        "clusters_after": after["detector"].labels_ if after else None,
        "attractor_masks": [f.mask for f in findings],
    }
    if text_arrays is not None:
        arrays.update(text_arrays)
    elif findings:
        images = data.audit_images
        arrays["member_images"] = [images[np.flatnonzero(f.mask)[:24], 0] for f in findings]
        arrays["attribution_maps"] = [f.probe.attribution if f.probe else None for f in findings]
        arrays["probe_examples"] = [f.probe.examples if f.probe else None for f in findings]
    return arrays


def _num(value):
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def _label(value, names):
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and 0 <= int(value) < len(names):
        return str(names[int(value)])
    return str(value)


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _f(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"
