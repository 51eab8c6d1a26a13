"""Render a short markdown summary of the audit, for a pull-request comment."""

from __future__ import annotations

import re

from mitigate.report.html import format_score
from mitigate.report.schema import validate_report

VERDICT_ICONS = {
    "mitigated": "\u2705",
    "not mitigated": "\u274c",
    "attractors found": "\u26a0\ufe0f",
    "no attractor found": "\u2796",
}

# Caps that keep the summary under about 40 lines. The HTML page lists everything.
MAX_REASONS = 5
MAX_ATTRACTOR_ROWS = 8
MAX_FAILED_CHECKS = 5

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]#+!|~])")


def escape_markdown(text) -> str:
    """Escape ``text`` for one line of GitHub-flavoured markdown.

    HTML special characters become entities, markdown punctuation (including
    ``|``, which would split a table cell) is backslash-escaped and line
    breaks become spaces.
    """
    text = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = " ".join(text.split())
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def render_markdown(audit: dict) -> str:
    """Summarise the audit in markdown: verdict, reasons, attractors and failed checks.

    Parameters
    ----------
    audit : dict
        The content of report.json; validated first with ``validate_report``.

    Returns
    -------
    str
        At most about 40 lines; longer lists are cut with a count of the rest.

    Raises
    ------
    ValueError
        If ``audit`` does not match the report schema.
    """
    validate_report(audit)
    recipe = audit.get("recipe")
    title = escape_markdown(recipe["name"]) if recipe else "detection"
    verdict = audit["verdict"]

    lines = [f"### Attractor audit: {title}", "", f"**Verdict: {VERDICT_ICONS[verdict]} {verdict}**", ""]
    lines += _capped([f"- {escape_markdown(reason)}" for reason in audit["verdict_reasons"]],
                     MAX_REASONS, "reason(s)")
    lines += ["", _accuracy_line(audit)]
    lines += _attractor_table(audit["attractors"])
    lines += _verification_lines(audit.get("verification"))
    lines += ["", "_Full evidence, figures and settings: the HTML report._"]
    return "\n".join(lines) + "\n"


def _capped(lines: list[str], limit: int, noun: str) -> list[str]:
    """Keep the first ``limit`` lines and count the rest."""
    if len(lines) <= limit:
        return lines
    return lines[:limit] + [f"- \u2026 and {len(lines) - limit} more {noun}"]


def _accuracy_line(audit: dict) -> str:
    """Describe accuracy and worst-group accuracy, before and (if run) after."""
    before, after = audit["before"], audit.get("after")
    parts = [
        ("Accuracy", "accuracy", "accuracy_reason"),
        ("worst-group accuracy", "worst_group_accuracy", "worst_group_reason"),
    ]
    texts = []
    for name, key, reason_key in parts:
        text = f"{name} {escape_markdown(format_score(before[key], before[reason_key]))}"
        if after:
            text += f" \u2192 {escape_markdown(format_score(after[key], after[reason_key]))}"
        texts.append(text)
    return "; ".join(texts) + ("" if after else " (before retraining)") + "."


def _attractor_table(attractors: list[dict]) -> list[str]:
    """Build the attractor table: members, classes, ACS and accuracy before and after."""
    if not attractors:
        return ["", "No attractor found."]
    lines = [
        "",
        "| attractor | members | classes | ACS before \u2192 after | accuracy before \u2192 after "
        "| cause | remedy | verified |",
        "|---|---:|---|---|---|---|---|---|",
    ]
    for attractor in attractors[:MAX_ATTRACTOR_ROWS]:
        classes = ", ".join(
            f"{escape_markdown(name)}: {count}"
            for name, count in sorted(attractor["classes"].items(), key=lambda item: -item[1])
        )
        acs = f"{format_score(attractor['acs_before'])} \u2192 {format_score(attractor['acs_after'])}"
        accuracy = (f"{format_score(attractor['accuracy_before'])} \u2192 "
                    f"{format_score(attractor['accuracy_after'])}")
        verified = {True: "yes", False: "no", None: "not checked"}[attractor["verified"]]
        lines.append(
            f"| A{attractor['id']} | {attractor['member_count']} | {classes} | {acs} | {accuracy} "
            f"| {attractor['cause'].replace('_', ' ')} | {escape_markdown(attractor['remedy'] or 'none')} "
            f"| {verified} |"
        )
    if len(attractors) > MAX_ATTRACTOR_ROWS:
        lines.append(f"\n\u2026 and {len(attractors) - MAX_ATTRACTOR_ROWS} more attractor(s).")
    return lines


def _verification_lines(verification: dict | None) -> list[str]:
    """Count passed checks and list the failed ones and any new attractors."""
    if not verification:
        return []
    checks = verification["checks"]
    failed = [check for check in checks if not check["passed"]]
    lines = ["", f"Verification: {len(checks) - len(failed)} of {len(checks)} checks passed."]
    lines += _capped(
        [f"- failed: {escape_markdown(check['name'])}: {escape_markdown(check['detail'])}" for check in failed],
        MAX_FAILED_CHECKS, "failed check(s)",
    )
    if verification["new_attractors"]:
        ids = ", ".join(str(new["cluster_id"]) for new in verification["new_attractors"])
        lines.append(f"- new attractor(s) after retraining: cluster {ids}")
    return lines
