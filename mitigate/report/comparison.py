"""Render the comparison of two audit reports as an HTML page and a markdown summary."""

from __future__ import annotations

from mitigate.report.html import format_score, jinja_environment
from mitigate.report.markdown import escape_markdown
from mitigate.report.schema import validate_comparison

TEMPLATE_NAME = "comparison.html"

VERDICT_ICONS = {
    "all attractors resolved": "\u2705",
    "attractors persist": "\u274c",
    "new attractors appeared": "\u274c",
    "no attractor in either report": "\u2796",
}
# Rows of the markdown table; the HTML page lists every attractor.
MAX_MARKDOWN_ROWS = 10


def render_comparison_html(comparison: dict) -> str:
    """Render a comparison (see ``mitigate.compare.compare_reports``) as one self-contained HTML page.

    Raises
    ------
    ValueError
        If ``comparison`` does not match the comparison schema.
    """
    validate_comparison(comparison)
    title = "Attractor comparison"
    recipes = {comparison[side]["recipe"] for side in ("before", "after")} - {None}
    if len(recipes) == 1:
        title += f": {recipes.pop()}"
    return jinja_environment().get_template(TEMPLATE_NAME).render(
        comparison=comparison, title=title, verdict_class=comparison["verdict"].replace(" ", "-"),
    )


def render_comparison_markdown(comparison: dict) -> str:
    """Summarise a comparison in markdown, short enough for a pull-request comment.

    Raises
    ------
    ValueError
        If ``comparison`` does not match the comparison schema.
    """
    validate_comparison(comparison)
    verdict = comparison["verdict"]
    counts = comparison["counts"]
    lines = [
        "### Attractor comparison",
        "",
        f"**{VERDICT_ICONS[verdict]} {verdict}**: {counts['resolved']} resolved, "
        f"{counts['persisting']} persisting, {counts['appeared']} appeared "
        f"(matched by member-id Jaccard index \u2265 {comparison['match']['threshold']}).",
        "",
        _overall_line(comparison["overall"]),
    ]
    rows = comparison["attractors"]
    if rows:
        lines += [
            "",
            "| status | BEFORE | AFTER | Jaccard | members | ACS | member accuracy |",
            "|---|---|---|---:|---|---|---|",
        ]
        for row in rows[:MAX_MARKDOWN_ROWS]:
            lines.append(
                f"| {row['status']} | {_attractor_id(row['before_id'])} | {_attractor_id(row['after_id'])} "
                f"| {row['jaccard']:.2f} | {_arrow(row['member_count'])} | {_arrow(row['acs'])} "
                f"| {_arrow(row['accuracy'])} |"
            )
        if len(rows) > MAX_MARKDOWN_ROWS:
            lines.append(f"\n\u2026 and {len(rows) - MAX_MARKDOWN_ROWS} more attractor(s).")
    lines += ["", "_Classes, causes and the compared reports: comparison.html._"]
    return "\n".join(lines) + "\n"


def _overall_line(overall: dict) -> str:
    parts = []
    for name, key in (("Accuracy", "accuracy"), ("worst-group accuracy", "worst_group_accuracy")):
        text = f"{name} {_arrow(overall[key])}"
        if overall[key]["reason"]:
            text += f" ({escape_markdown(overall[key]['reason'])})"
        parts.append(text)
    return "; ".join(parts) + "."


def _arrow(values: dict) -> str:
    """Format "before → after", with the change when both sides exist."""
    text = f"{format_score(values['before'])} \u2192 {format_score(values['after'])}"
    if values.get("change") is not None:
        text += f" ({values['change']:+.3f})"
    return text


def _attractor_id(value) -> str:
    return "\u2014" if value is None else f"A{value}"
