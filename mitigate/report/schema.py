"""Validation of report.json and comparison.json against their JSON Schemas (draft 2020-12)."""

from __future__ import annotations

import functools
import json
import math
import reprlib
from pathlib import Path

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schema"
SCHEMA_PATH = SCHEMA_DIR / "report.schema.json"
COMPARISON_SCHEMA_PATH = SCHEMA_DIR / "comparison.schema.json"

# Problems listed in a ValueError before the rest are only counted.
MAX_LISTED_PROBLEMS = 20


@functools.lru_cache(maxsize=4)
def load_schema(path: Path = SCHEMA_PATH) -> dict:
    """Read a schema file, by default the report schema ``SCHEMA_PATH`` (once per process)."""
    with open(path, encoding="utf-8") as handle:
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
    _validate(audit, SCHEMA_PATH, name="audit", title="audit report")


def validate_comparison(comparison: dict) -> None:
    """Check a comparison dict against ``COMPARISON_SCHEMA_PATH``.

    Raises
    ------
    ValueError
        If ``comparison`` does not match the schema or contains a NaN or
        infinite float; the message lists every failing JSON path, as for
        ``validate_report``.
    """
    _validate(comparison, COMPARISON_SCHEMA_PATH, name="comparison", title="comparison report")


def _validate(document: dict, schema_path: Path, *, name: str, title: str) -> None:
    """Raise a ValueError listing every schema violation and non-finite float in ``document``."""
    import jsonschema

    if not isinstance(document, dict):
        raise ValueError(f"{name} must be a dict, got {type(document).__name__}")

    schema = load_schema(schema_path)
    validator = jsonschema.Draft202012Validator(schema)
    problems = [(error.json_path, _short_message(error)) for error in validator.iter_errors(document)]
    problems += [(path, "is not a finite number") for path in _nonfinite_paths(document, "$")]
    if not problems:
        return

    problems.sort()
    lines = [f"  {path}: {message}" for path, message in problems[:MAX_LISTED_PROBLEMS]]
    if len(problems) > MAX_LISTED_PROBLEMS:
        lines.append(f"  ... and {len(problems) - MAX_LISTED_PROBLEMS} more")
    version = schema["properties"]["schema_version"]["const"]
    raise ValueError(
        f"invalid {title}: {len(problems)} problem(s) against {schema_path.name} "
        f"(schema_version {version}):\n" + "\n".join(lines)
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
