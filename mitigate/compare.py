"""Comparison of two audit reports of the same inputs: which attractors persist, resolve or appear.

Two reports (for example the baseline and the retrained model, or two model
versions) are compared through the ``member_ids`` of their attractors. An
attractor of BEFORE and one of AFTER are the same attractor when their member
sets overlap enough (Jaccard index at least ``DEFAULT_MATCH_THRESHOLD``).
The comparison is written as ``comparison.json`` (schema in
``mitigate/schema/comparison.schema.json``), ``comparison.html`` and
``comparison.md``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

from mitigate import __version__

logger = logging.getLogger(__name__)

# Two attractors are matched when the Jaccard index of their member sets is at
# least this. Two unrelated member sets, each a random share p of the audit
# inputs, have an expected Jaccard index of p / (2 - p): below 0.3 for any
# p under 46%, and 0.14 for p = 25%. A persisting attractor that lost most of
# its members still matches while it keeps about 30% of them.
DEFAULT_MATCH_THRESHOLD = 0.3

REPORT_FILE = "report.json"
OUTPUT_STEM = "comparison"

STATUSES = ("persisting", "resolved", "appeared")


class ComparisonError(ValueError):
    """A report folder is missing, invalid, or audited other inputs than the other one."""


def load_report_folder(folder: Path | str) -> dict:
    """Read and validate ``folder / "report.json"``.

    Raises
    ------
    ComparisonError
        If the folder or its report.json is missing, is not JSON, or does
        not match the report schema.
    """
    from mitigate.report import validate_report

    folder = Path(folder)
    path = folder / REPORT_FILE if folder.is_dir() else folder
    if not path.is_file():
        raise ComparisonError(
            f"no {REPORT_FILE} in {folder}; pass a folder written by 'mitigate run' or "
            "'mitigate detect' (for a run, OUT/baseline and OUT/retrained hold one each)"
        )
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        validate_report(report)
    except ValueError as err:
        # json.JSONDecodeError is a ValueError too.
        raise ComparisonError(f"{path} is not a valid audit report: {err}") from err
    return report


def member_jaccard(first, second) -> float:
    """Return the Jaccard index |A ∩ B| / |A ∪ B| of two member-id collections, in [0, 1].

    Two empty collections have index 0: an empty member set matches nothing.
    """
    first, second = set(first), set(second)
    union = len(first | second)
    return len(first & second) / union if union else 0.0


def match_attractors(before: list[dict], after: list[dict],
                     threshold: float = DEFAULT_MATCH_THRESHOLD) -> list[tuple[int, int, float]]:
    """Pair attractors of two reports one to one by member overlap.

    Pairs are taken greedily, highest Jaccard index first (ties by list
    position), and each attractor is used at most once.

    Parameters
    ----------
    before, after : list of dict
        Attractor records with a ``member_ids`` list.
    threshold : float
        Smallest Jaccard index of a pair, in (0, 1].

    Returns
    -------
    list of (int, int, float)
        ``(index in before, index in after, Jaccard index)`` per pair.
    """
    candidates = []
    for i, old in enumerate(before):
        for j, new in enumerate(after):
            jaccard = member_jaccard(old["member_ids"], new["member_ids"])
            if jaccard >= threshold:
                candidates.append((-jaccard, i, j))
    candidates.sort()

    pairs, used_before, used_after = [], set(), set()
    for negative_jaccard, i, j in candidates:
        if i not in used_before and j not in used_after:
            pairs.append((i, j, -negative_jaccard))
            used_before.add(i)
            used_after.add(j)
    return sorted(pairs)


def compare_reports(before: dict, after: dict, *, threshold: float = DEFAULT_MATCH_THRESHOLD,
                    before_path: str | None = None, after_path: str | None = None) -> dict:
    """Compare two audit reports of the same inputs.

    Parameters
    ----------
    before, after : dict
        Contents of two report.json files (kind "run" or "detect"). For a
        report of kind "run" the model under audit is the one before
        retraining: its ``before`` snapshot and its attractor list, the only
        attractors that carry member ids.
    threshold : float
        Smallest Jaccard index of two member sets for their attractors to
        count as the same attractor; see ``DEFAULT_MATCH_THRESHOLD``.
    before_path, after_path : str, optional
        Where the reports were read from, recorded in the comparison.

    Returns
    -------
    dict
        The comparison, as described in ``mitigate/schema/comparison.schema.json``.

    Raises
    ------
    ComparisonError
        If ``threshold`` is outside (0, 1], or the two reports audited a
        different number of inputs or different classes.
    """
    if not 0.0 < threshold <= 1.0:
        raise ComparisonError(f"match threshold must be in (0, 1], got {threshold}; "
                              f"the default is {DEFAULT_MATCH_THRESHOLD}")
    _check_same_inputs(before, after)

    pairs = match_attractors(before["attractors"], after["attractors"], threshold)
    rows = _attractor_rows(before["attractors"], after["attractors"], pairs)
    names = before["data"]["class_names"]
    for row in rows:
        row["top_prediction"] = {side: _class_name(value, names)
                                 for side, value in row["top_prediction"].items()}
    counts = {status: sum(row["status"] == status for row in rows) for status in STATUSES}
    verdict, reasons = _verdict(counts)
    return {
        "schema_version": "1.0",
        "tool": {"name": "mitigate", "version": __version__},
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "kind": "comparison",
        "before": _report_summary(before, before_path),
        "after": _report_summary(after, after_path),
        "inputs": {key: before["data"][key] for key in ("n_audit", "class_names")},
        "match": {"method": "jaccard of member_ids, one to one, highest first", "threshold": threshold},
        "overall": {
            "accuracy": _change(before["before"], after["before"], "accuracy", "accuracy_reason"),
            "worst_group_accuracy": _change(before["before"], after["before"], "worst_group_accuracy",
                                            "worst_group_reason"),
        },
        "counts": counts,
        "attractors": rows,
        "verdict": verdict,
        "verdict_reasons": reasons,
    }


def _check_same_inputs(before: dict, after: dict) -> None:
    """Raise unless both reports audited the same number of inputs of the same classes.

    The ``source`` texts may differ: ``mitigate run`` names the audited model
    in it. Both are recorded in the comparison for the reader to check.
    """
    old, new = before["data"], after["data"]
    if old["n_audit"] != new["n_audit"]:
        raise ComparisonError(
            f"the reports audited different inputs: {old['n_audit']} audit inputs in BEFORE, "
            f"{new['n_audit']} in AFTER; member ids can only be compared on the same audit inputs"
        )
    if old["class_names"] != new["class_names"]:
        raise ComparisonError(
            f"the reports use different classes: {old['class_names']} in BEFORE, "
            f"{new['class_names']} in AFTER; compare audits of the same data"
        )


def _report_summary(report: dict, path: str | None) -> dict:
    """Describe one compared report: where it came from, its kind, model and verdict."""
    model = report.get("model") or {}
    weights = model.get("baseline_weights")
    return {
        "path": path,
        "kind": report["kind"],
        "created": report["created"],
        "source": report["data"]["source"],
        "recipe": (report.get("recipe") or {}).get("name"),
        "model_weights": weights,
        "layer": model.get("layer"),
        "verdict": report["verdict"],
        "n_attractors": len(report["attractors"]),
    }


def _attractor_rows(before: list[dict], after: list[dict], pairs) -> list[dict]:
    """Build one row per matched pair, per resolved attractor and per new attractor."""
    matched_before = {i: (j, jaccard) for i, j, jaccard in pairs}
    matched_after = {j for _, j, _ in pairs}
    rows = []
    for i, old in enumerate(before):
        if i in matched_before:
            j, jaccard = matched_before[i]
            rows.append(_row("persisting", old, after[j], jaccard, n_others=len(after)))
        else:
            rows.append(_row("resolved", old, None, _best_overlap(old, after), n_others=len(after)))
    for j, new in enumerate(after):
        if j not in matched_after:
            rows.append(_row("appeared", None, new, _best_overlap(new, before), n_others=len(before)))
    return rows


def _best_overlap(attractor: dict, others: list[dict]) -> float:
    """Return the highest Jaccard index of ``attractor`` with any of ``others`` (0 when none)."""
    return max((member_jaccard(attractor["member_ids"], other["member_ids"]) for other in others),
               default=0.0)


def _row(status: str, old: dict | None, new: dict | None, jaccard: float, *, n_others: int) -> dict:
    """Describe one attractor across the two reports; absent sides are null with a reason."""
    missing = {
        "resolved": "no attractor in AFTER shares enough members",
        "appeared": "no attractor in BEFORE shares enough members",
    }.get(status)
    shared = len(set(old["member_ids"]) & set(new["member_ids"])) if old and new else 0
    row = {
        "status": status,
        "before_id": old["id"] if old else None,
        "after_id": new["id"] if new else None,
        "jaccard": round(jaccard, 6),
        "shared_members": shared,
        "member_count": _pair(old, new, "member_count"),
        "classes": _pair(old, new, "classes"),
        "top_prediction": _pair(old, new, "top_prediction"),
        "cause": _pair(old, new, "cause"),
        "acs": _score_change(old, new, "acs_before"),
        "accuracy": _score_change(old, new, "accuracy_before"),
        "missing_reason": missing,
    }
    row["summary"] = _row_summary(row, n_others)
    return row


def _pair(old: dict | None, new: dict | None, key: str) -> dict:
    return {"before": old[key] if old else None, "after": new[key] if new else None}


def _score_change(old: dict | None, new: dict | None, key: str) -> dict:
    """Return before, after and after - before of one attractor score (null when a side is absent)."""
    first = old[key] if old else None
    second = new[key] if new else None
    change = None if first is None or second is None else round(second - first, 6)
    return {"before": first, "after": second, "change": change}


def _change(old: dict, new: dict, key: str, reason_key: str) -> dict:
    """Return one overall score of the two models with its change and the reasons for nulls."""
    first, second = old[key], new[key]
    reasons = [f"{side}: {snapshot[reason_key]}" for side, snapshot in (("BEFORE", old), ("AFTER", new))
               if snapshot[key] is None and snapshot[reason_key]]
    return {
        "before": first,
        "after": second,
        "change": None if first is None or second is None else round(second - first, 6),
        "reason": "; ".join(reasons) or None,
    }


def _row_summary(row: dict, n_others: int) -> str:
    """Say in one sentence what happened to one attractor.

    ``n_others`` is the number of attractors in the other report.
    """
    if row["status"] == "resolved":
        return (f"BEFORE attractor A{row['before_id']} ({row['member_count']['before']} members, "
                f"ACS {_fmt(row['acs']['before'])}) has no counterpart in AFTER"
                f"{_closest(row['jaccard'], 'AFTER', n_others)}.")
    if row["status"] == "appeared":
        return (f"AFTER attractor A{row['after_id']} ({row['member_count']['after']} members, "
                f"ACS {_fmt(row['acs']['after'])}) is new"
                f"{_closest(row['jaccard'], 'BEFORE', n_others)}.")
    return (f"BEFORE A{row['before_id']} persists as AFTER A{row['after_id']} "
            f"({row['shared_members']} shared members, Jaccard {row['jaccard']:.2f}); "
            f"ACS {_fmt(row['acs']['before'])} to {_fmt(row['acs']['after'])}, member accuracy "
            f"{_pct(row['accuracy']['before'])} to {_pct(row['accuracy']['after'])}.")


def _verdict(counts: dict) -> tuple[str, list[str]]:
    """Summarise the counts: a new attractor outweighs a resolved one."""
    reasons = [f"{counts[status]} attractor(s) {status}" for status in STATUSES]
    if counts["appeared"]:
        return "new attractors appeared", reasons
    if counts["persisting"]:
        return "attractors persist", reasons
    if counts["resolved"]:
        return "all attractors resolved", reasons
    return "no attractor in either report", reasons


def _class_name(value, names: list[str]):
    """Show an integer class code as its class name; keep names and nulls as they are."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return names[value]
    return value


def _closest(jaccard: float, other: str, n_others: int) -> str:
    if n_others == 0:
        return f", and {other} lists no attractor"
    return f"; the closest {other} attractor shares a Jaccard index of {jaccard:.2f} with it"


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def write_comparison(out_dir: Path | str, comparison: dict) -> dict:
    """Validate ``comparison`` and write comparison.html, comparison.md and comparison.json.

    comparison.json is written last, so its presence marks a finished comparison.

    Returns
    -------
    dict
        The paths written, by format ("html", "markdown", "json").
    """
    from mitigate.files import write_json, write_text
    from mitigate.report.comparison import render_comparison_html, render_comparison_markdown

    out_dir = Path(out_dir)
    html = render_comparison_html(comparison)
    markdown = render_comparison_markdown(comparison)
    paths = {"html": out_dir / f"{OUTPUT_STEM}.html", "markdown": out_dir / f"{OUTPUT_STEM}.md",
             "json": out_dir / f"{OUTPUT_STEM}.json"}
    write_text(paths["html"], html)
    write_text(paths["markdown"], markdown)
    write_json(paths["json"], comparison)
    logger.info("wrote %s (%s)", paths["html"], comparison["verdict"])
    return paths
