"""Detection-only audits: ``mitigate detect`` on precomputed embeddings, with no model.

``detect_report`` turns a fitted ``AttractorDetector`` into a report dict of
kind "detect" (see ``mitigate/schema/report.schema.json``), and
``write_detect_report`` writes it as report.json, report.html and report.md.
``mitigate run`` uses the same two functions for its per-model reports in
``OUT/baseline`` and ``OUT/retrained``, so that any two audits of the same
inputs can be compared with ``mitigate report compare``.
"""

from __future__ import annotations

import datetime as dt
import logging
import warnings
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ATTRACTOR = 1
EXIT_USAGE = 2

DETECT_ONLY = "detection only: no retraining"
# Flagging criteria listed per attractor in the verdict reasons.
MAX_REASONS_PER_ATTRACTOR = 5


def run_detect(args, configure_logging) -> int:
    """Run ``mitigate detect`` for parsed arguments and return the exit status.

    Parameters
    ----------
    args : argparse.Namespace
        The options of the ``detect`` subcommand.
    configure_logging : callable
        ``configure_logging(log_file)`` sets up console logging, and file
        logging when ``log_file`` is a path. It is called without a file
        first, so that a usage error leaves no output folder behind.

    Returns
    -------
    int
        0 when done, 1 when ``--fail-on-attractor`` is set and an attractor
        was flagged, 2 for a usage error (unreadable input, invalid option or
        invalid embeddings).
    """
    from mitigate.inputs import InputError

    configure_logging(None)
    try:
        embeddings, labels, predictions, ids, source = _load_inputs(args)
        detector = _make_detector(args)
    except (InputError, ValueError) as err:
        logger.error("%s", err)
        return EXIT_USAGE

    configure_logging(args.out / "detect.log")
    logger.info("detecting attractors in %s", source)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            detector.fit(embeddings, labels, predictions)
    except ValueError as err:
        logger.error("%s", err)
        return EXIT_USAGE
    for warning in caught:
        logger.warning("%s", warning.message)
    labels, predictions = _class_values(labels), _class_values(predictions)

    from mitigate.audit import environment_info

    audit = detect_report(detector, labels=labels, predictions=predictions, ids=ids, source=source,
                          environment=environment_info(), log_file="detect.log")
    label_codes = None if labels is None else _class_namer(labels, predictions, None).codes(labels)
    write_detect_report(args.out, audit, detector, label_codes=label_codes)
    n_attractors = len(audit["attractors"])
    logger.info("verdict: %s (%d attractor(s)) — report: %s", audit["verdict"], n_attractors,
                args.out / "report.html")
    if args.fail_on_attractor and n_attractors:
        logger.error("--fail-on-attractor: %d attractor(s) flagged", n_attractors)
        return EXIT_ATTRACTOR
    return EXIT_OK


def _load_inputs(args):
    """Read the embeddings and the optional labels, predictions and ids named by ``args``."""
    from mitigate.inputs import load_embeddings, load_vector
    from mitigate.validation import check_ids

    source = load_embeddings(args.embeddings, column=args.embedding_column)
    labels = predictions = ids = None
    if args.labels is not None:
        labels = load_vector(args.labels, source, name="--labels")
    if args.predictions is not None:
        predictions = load_vector(args.predictions, source, name="--predictions")
    if args.ids is not None:
        ids = check_ids(load_vector(args.ids, source, name="--ids"), len(source.embeddings),
                        name="--ids")
    return source.embeddings, labels, predictions, ids, source.description


def _make_detector(args):
    from mitigate.detect import AttractorDetector
    from mitigate.shifts import DEFAULT_MAX_FIT

    copy_fit_threshold = DEFAULT_MAX_FIT
    if args.no_translated_copies:
        copy_fit_threshold = None
    elif args.copy_fit_threshold is not None:
        copy_fit_threshold = args.copy_fit_threshold

    detector = AttractorDetector(
        metric=args.metric,
        min_cluster_size=args.min_cluster_size,
        acs_threshold=args.acs_threshold,
        copy_fit_threshold=copy_fit_threshold,
        nonfinite="drop" if args.drop_nonfinite else "raise",
        random_state=args.seed,
    )
    detector._check_params()
    return detector


def detect_report(detector, *, labels=None, predictions=None, ids=None, class_names=None,
                  source: str, recipe: dict | None = None, environment: dict | None = None,
                  log_file: str | None = None) -> dict:
    """Build the report dict of kind "detect" for a fitted detector.

    Parameters
    ----------
    detector : AttractorDetector
        Fitted on the embeddings with the same ``labels`` and ``predictions``.
    labels, predictions : array-like of shape (n_samples,), optional
        As given to ``detector.fit``: integers or strings.
    ids : list of int or str, optional
        One id per row; the member ids of the report. Row indices when None.
    class_names : list of str, optional
        Names of integer classes 0..K-1 (as in ``mitigate run``). When None,
        the distinct label values, as strings, are the class names.
    source : str
        Where the embeddings came from, for the report.
    recipe : dict, optional
        The report's ``recipe`` block, for reports written by ``mitigate run``.
    environment : dict, optional
        From ``mitigate.audit.environment_info``.
    log_file : str, optional
        Name of the log file next to the report.

    Returns
    -------
    dict
        Valid against the report schema: ``after`` and ``verification`` are
        null, every attractor's root cause is "undetermined" because no probe
        ran, and scores that need labels or predictions are null with the
        reason in ``before.unavailable_scores``.
    """
    from mitigate import __version__

    labels, predictions = _class_values(labels), _class_values(predictions)
    n_rows = detector.labels_.shape[0]
    namer = _class_namer(labels, predictions, class_names)
    snapshot = _snapshot(detector, labels, predictions, namer)
    attractors = [_attractor_record(index, cluster, labels, ids, namer)
                  for index, cluster in enumerate(detector.attractors_)]
    audit = {
        "schema_version": "1.0",
        "tool": {"name": "mitigate", "version": __version__},
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "kind": "detect",
        "recipe": recipe,
        "data": {"source": source, "n_train": None, "n_audit": int(n_rows),
                 "class_names": namer.names},
        "model": None,
        "training": None,
        "detection_settings": detection_settings(detector),
        "before": snapshot,
        "after": None,
        "attractors": attractors,
        "verification": None,
        "verdict": "attractors found" if attractors else "no attractor found",
        "verdict_reasons": _verdict_reasons(detector, attractors, snapshot),
        "evaluation": None,
        "log_file": log_file,
    }
    if environment is not None:
        audit["environment"] = environment
    return audit


def detection_settings(detector) -> dict:
    """Return the detector's settings as used, after clamping, with its flagging thresholds."""
    settings = dict(detector.settings_)
    settings.update(
        acs_threshold=detector.acs_threshold_,
        acs_reference=detector.acs_reference_,
        relative_acs_threshold=detector.relative_acs_threshold,
        copy_fit_threshold=detector.copy_fit_threshold,
        entropy_threshold=detector.entropy_threshold,
        concentration_threshold=detector.concentration_threshold,
        accuracy_gap=detector.accuracy_gap,
    )
    return settings


def write_detect_report(out_dir: Path, audit: dict, detector, *, label_codes=None) -> None:
    """Validate ``audit`` and write report.html, report.md and then report.json into ``out_dir``.

    ``label_codes``, of shape (n_samples,), contains each row's index in
    ``audit["data"]["class_names"]`` and colours a scatter plot by class.
    Every file is written under a temporary name and renamed. report.json goes
    last, so its presence means the other two are complete.
    """
    from mitigate.files import write_json, write_text
    from mitigate.report import render_html, render_markdown, validate_report

    validate_report(audit)
    out_dir = Path(out_dir)
    arrays = _figure_arrays(detector, label_codes)
    write_text(out_dir / "report.html", render_html(audit, arrays))
    write_text(out_dir / "report.md", render_markdown(audit))
    write_json(out_dir / "report.json", audit)
    logger.info("wrote %s (verdict: %s)", out_dir / "report.json", audit["verdict"])


def _class_values(values):
    """Return label or prediction values as an array, integer-valued floats as integers.

    The detector codes 3.0 and 3 as the same class, so the report names both "3".
    Call this only on values the detector has accepted.
    """
    if values is None:
        return None
    array = np.asarray(values)
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.int64)
    return array


class _ClassNamer:
    """Map label and prediction values to the class names written in the report.

    With given names, values are integer codes into them (as in ``mitigate
    run``); otherwise each distinct value, as a string, is its own name.
    """

    def __init__(self, names: list[str], given: bool):
        self.names = names
        self._given = given
        self._index = {name: code for code, name in enumerate(names)}

    def __call__(self, value) -> str | None:
        if value is None:
            return None
        if isinstance(value, np.generic):
            value = value.item()
        if self._given and isinstance(value, int) and 0 <= value < len(self.names):
            return self.names[value]
        return str(value)

    def codes(self, values) -> np.ndarray:
        """Return the index in ``names`` of every value, for the class-coloured scatter plot."""
        return np.array([self._index[self(value)] for value in np.asarray(values).tolist()],
                        dtype=np.int64)


def _class_namer(labels, predictions, class_names) -> _ClassNamer:
    if class_names is not None:
        return _ClassNamer([str(name) for name in class_names], given=True)
    values = [np.asarray(v) for v in (labels, predictions) if v is not None]
    if not values:
        return _ClassNamer([], given=False)
    distinct = np.unique(np.concatenate([np.unique(v) for v in values]))
    return _ClassNamer([str(value) for value in distinct.tolist()], given=False)


def _snapshot(detector, labels, predictions, namer) -> dict:
    """Return the ``before`` block: accuracy, worst-group accuracy and every cluster."""
    from mitigate import scores
    from mitigate.constants import NOISE_LABEL

    unavailable = dict(detector.unavailable_scores_)
    accuracy = detector.overall_accuracy_
    worst_group, group_definition = None, None
    if labels is not None and predictions is not None:
        kept = detector.kept_rows_
        label_values, predicted = np.asarray(labels)[kept], np.asarray(predictions)[kept]
        member = np.zeros(kept.shape[0], dtype=bool)
        for cluster in detector.attractors_:
            member[cluster.members] = True
        # Groups as in ``mitigate run`` without planted ground truth.
        _, label_codes = np.unique(label_values, return_inverse=True)
        groups = label_codes * 2 + member[kept]
        worst_group = scores.worst_group_accuracy(label_values, predicted, groups)
        group_definition = "class x member of a flagged attractor"
    else:
        unavailable["worst_group_accuracy"] = "needs both labels and predictions"

    clusters = []
    for cluster in detector.clusters_:
        record = cluster.to_dict()
        record.pop("members")
        record["top_label"] = namer(record["top_label"])
        record["top_prediction"] = namer(record["top_prediction"])
        clusters.append(record)
    return {
        "accuracy": accuracy,
        "accuracy_reason": None if accuracy is not None else unavailable.get("accuracy"),
        "worst_group_accuracy": worst_group,
        "worst_group_reason": None if worst_group is not None else unavailable["worst_group_accuracy"],
        "group_definition": group_definition,
        "n_noise": int(np.sum(detector.labels_ == NOISE_LABEL)),
        "unavailable_scores": unavailable,
        "clusters": clusters,
    }


def _attractor_record(index: int, cluster, labels, ids, namer) -> dict:
    """Return the report record of one flagged attractor, with no probe and no remedy."""
    members = np.asarray(cluster.members)
    classes = {}
    if labels is not None:
        values, counts = np.unique(np.asarray(labels)[members], return_counts=True)
        classes = {namer(value): int(count) for value, count in zip(values, counts)}
    member_ids = [int(row) for row in members] if ids is None else [ids[row] for row in members]
    record = {
        "id": index,
        "cluster_id": int(cluster.cluster_id),
        "cluster_ids": [int(i) for i in cluster.cluster_ids],
        "member_count": int(members.size),
        "member_ids": member_ids,
        "classes": classes,
        "acs_before": _finite(cluster.acs),
        "acs_after": None,
        "acs_after_reason": DETECT_ONLY,
        "label_entropy": _finite(cluster.label_entropy),
        "prediction_concentration": _finite(cluster.prediction_concentration),
        "top_prediction": namer(cluster.top_prediction),
        "accuracy_before": _finite(cluster.accuracy),
        "accuracy_after": None,
        "probe": None,
        "cause": "undetermined",
        "cause_evidence": ["detection only: no probe ran, so the root cause is not named"],
        "remedy": None,
        "remedy_reason": DETECT_ONLY,
        "alternatives": [],
        "verified": None,
    }
    record["summary"] = _summary(record, cluster)
    return record


def _summary(record: dict, cluster) -> str:
    """Describe one attractor in a sentence or three, using only the scores that exist."""
    n_clusters = len(cluster.cluster_ids)
    where = "one cluster" if n_clusters == 1 else f"{n_clusters} clusters"
    text = f"{record['member_count']} rows sit in {where}"
    if record["acs_before"] is not None:
        text += f" with ACS {record['acs_before']:.2f}"
    if cluster.relative_acs is not None:
        text += f", {cluster.relative_acs:.1f} times the median ACS of the other clusters"
    text += "."
    if cluster.copies is not None:
        partners = ", ".join(str(i) for i in cluster.copies.partners)
        text += (f" The clusters are translated copies of clusters {partners}, all moved along one "
                 "direction: a feature that does not depend on the class (a spurious cue or a data "
                 "artifact) moves the inputs that carry it.")
    if record["classes"]:
        top = sorted(record["classes"].items(), key=lambda item: -item[1])
        shown = ", ".join(f"{name} {count / record['member_count']:.0%}" for name, count in top[:4])
        text += f" They come from {len(top)} class(es) ({shown})."
    if record["prediction_concentration"] is not None:
        text += (f" {record['prediction_concentration']:.0%} of them are predicted as "
                 f"{record['top_prediction']}.")
    if record["accuracy_before"] is not None:
        text += f" Their accuracy is {record['accuracy_before']:.0%}."
    return text + " Detection only: no probe, root cause or remedy."


def _verdict_reasons(detector, attractors: list, snapshot: dict) -> list[str]:
    """List why the verdict is what it is, and which scores could not be computed."""
    reasons = []
    for record, cluster in zip(attractors, detector.attractors_):
        criteria = "; ".join(cluster.flag_reasons[:MAX_REASONS_PER_ATTRACTOR])
        reasons.append(f"attractor A{record['id']} ({record['member_count']} rows): {criteria}")
    if not attractors:
        reasons.append(f"none of the {len(detector.clusters_)} cluster(s) met every flagging criterion")
    for score, reason in snapshot["unavailable_scores"].items():
        reasons.append(f"{score.replace('_', ' ')} not computed: {reason}")
    return reasons


def _figure_arrays(detector, label_codes) -> dict:
    """Return the scatter-plot arrays of the kept rows (rows dropped as non-finite have no coordinates)."""
    kept = detector.kept_rows_
    masks = []
    for cluster in detector.attractors_:
        mask = np.zeros(kept.shape[0], dtype=bool)
        mask[cluster.members] = True
        masks.append(mask[kept])
    arrays = {"clusters_before": detector.labels_[kept], "attractor_masks": masks}
    if detector.coords_.shape[1] >= 2:
        arrays["coords_before"] = detector.coords_[kept][:, :2]
    if label_codes is not None:
        arrays["labels"] = np.asarray(label_codes)[kept]
    return arrays


def _finite(value):
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None
