"""Audit report output: the JSON Schema check, the HTML page and the markdown summary.

Importing this package does not import matplotlib; the figures load it when
``render_html`` draws them.
"""

from mitigate.report.html import render_html
from mitigate.report.markdown import render_markdown
from mitigate.report.schema import SCHEMA_PATH, validate_report

__all__ = ["SCHEMA_PATH", "render_html", "render_markdown", "validate_report"]
