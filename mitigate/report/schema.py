"""Validation of the audit dict against the report's JSON Schema (draft 2020-12)."""

from __future__ import annotations

import functools
import json
import math
import reprlib
from pathlib import Path

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema" / "report.schema.json"

# Problems listed in a ValueError before the rest are only counted.
MAX_LISTED_PROBLEMS = 20


@functools.lru_cache(maxsize=1)
def load_schema() -> dict:
    """Read the report schema from ``SCHEMA_PATH`` (once per process)."""
    with open(SCHEMA_PATH, encoding="utf-8") as handle:
        return json.load(handle)


def validate_report(audit: dict) -> None:
    """Check an audit dict against the report schema.

    Parameters
    ----------
    audit : dict
        The content of report.json, as described in ``SCHEMA_PATH``.

    Raises
    ------
    ValueError
        If ``audit`` does not match the schema or contains a NaN or infinite
        float. The message lists every failing path (as a JSON path such as
        ``$.before.clusters[0].acs``) with the reason.

    Notes
    -----
    JSON Schema counts a Python ``float('nan')`` as a number, so non-finite
    floats are found by a separate walk over the dict. The ``date-time``
    format of ``created`` is an annotation only and is not checked.
    """
    import jsonschema

    if not isinstance(audit, dict):
        raise ValueError(f"audit must be a dict, got {type(audit).__name__}")

    validator = jsonschema.Draft202012Validator(load_schema())
    problems = [(error.json_path, _short_message(error)) for error in validator.iter_errors(audit)]
    problems += [(path, "is not a finite number") for path in _nonfinite_paths(audit, "$")]
    if not problems:
        return

    problems.sort()
    lines = [f"  {path}: {message}" for path, message in problems[:MAX_LISTED_PROBLEMS]]
    if len(problems) > MAX_LISTED_PROBLEMS:
        lines.append(f"  ... and {len(problems) - MAX_LISTED_PROBLEMS} more")
    raise ValueError(
        f"invalid audit report: {len(problems)} problem(s) against {SCHEMA_PATH.name} "
        "(schema_version 1.0):\n" + "\n".join(lines)
    )


def _short_message(error) -> str:
    """Return the error message with a long offending value abbreviated."""
    full = repr(error.instance)
    if len(full) > 80 and error.message.startswith(full):
        return reprlib.repr(error.instance) + error.message[len(full):]
    return error.message


def _nonfinite_paths(value, path: str):
    """Yield the JSON path of every NaN or infinite float inside ``value``."""
    if isinstance(value, float):
        if not math.isfinite(value):
            yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _nonfinite_paths(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _nonfinite_paths(item, f"{path}[{index}]")
