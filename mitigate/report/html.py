"""Render the audit as one self-contained HTML page.

The page makes no network request: the CSS is inline and every figure is a
base64 PNG data URI. User-supplied strings (class names, recipe names, ids,
texts) are escaped by jinja2's autoescape.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
from markupsafe import Markup, escape

from mitigate.constants import NOISE_LABEL
from mitigate.report import plots
from mitigate.report.schema import validate_report

TEMPLATE_NAME = "report.html"

# Optional top-level keys of the audit and the value the page assumes when
# one is missing.
OPTIONAL_DEFAULTS = {
    "recipe": None,
    "model": None,
    "training": None,
    "detection_settings": {},
    "environment": None,
    "after": None,
    "verification": None,
    "evaluation": None,
    "log_file": None,
}

PER_ATTRACTOR_ARRAYS = (
    "attractor_masks", "member_images", "attribution_maps", "probe_examples",
    "member_texts", "highlight_tokens",
)
MAX_TEXTS_SHOWN = 10
MAX_TEXT_CHARS = 500
MAX_MEMBER_IDS_SHOWN = 50


def render_html(audit: dict, arrays: dict | None = None) -> str:
    """Render the audit report as one self-contained HTML page.

    Parameters
    ----------
    audit : dict
        The content of report.json; validated first with ``validate_report``.
    arrays : dict, optional
        Numpy arrays for the figures: ``coords_before``, ``coords_after``,
        ``labels``, ``clusters_before``, ``clusters_after``,
        ``attractor_masks``, ``member_images``, ``attribution_maps``,
        ``probe_examples``, ``member_texts`` and ``highlight_tokens``. Every
        key is optional, and a figure whose arrays are missing is left out.

    Returns
    -------
    str
        The HTML page.

    Raises
    ------
    ValueError
        If ``audit`` does not match the report schema, or an array has the
        wrong shape or a per-attractor list the wrong length.
    """
    validate_report(audit)
    report = {**OPTIONAL_DEFAULTS, **audit}
    arrays = check_arrays(report, arrays or {})

    context = {
        "report": report,
        "title": f"Attractor audit: {report['recipe']['name'] if report['recipe'] else 'detection'}",
        "verdict_class": report["verdict"].replace(" ", "-"),
        "scatter": _cluster_scatter(report, arrays),
        "class_scatter": _class_scatter(report, arrays),
        "evidence": [
            _attractor_evidence(attractor, index, arrays) for index, attractor in enumerate(report["attractors"])
        ],
        "label": _label_namer(report["data"]["class_names"]),
        "training_runs": _training_runs(report["training"]),
        "loss_figure": _loss_figure(report["training"]),
        "max_member_ids": MAX_MEMBER_IDS_SHOWN,
    }
    return jinja_environment().get_template(TEMPLATE_NAME).render(**context)


def jinja_environment():
    """Build the jinja2 environment of the report pages: autoescape, strict undefined, page filters."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("mitigate", "templates"),
        autoescape=jinja2.select_autoescape(["html"], default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["score"] = format_score
    environment.filters["setting"] = format_setting
    return environment


def format_score(value, reason: str | None = None) -> str:
    """Format a number for the page. None becomes "n/a", followed by its reason if one is given.

    Integers print with thousands separators. Floats print with three
    decimals, in scientific notation below 0.001 and without decimals from
    1000 on.
    """
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        if reason is None and value is not None:
            reason = "not a finite number"
        return f"n/a ({reason})" if reason else "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.2e}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3f}"


def format_setting(value) -> str:
    """Format a free-form setting value: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, allow_nan=False, default=str)


def check_arrays(report: dict, arrays: dict) -> dict:
    """Check the shapes of the figure arrays and convert them to numpy.

    Returns a new dict with every known key present (None where absent).
    Per-attractor lists must have one entry per attractor, and an entry may
    be None to skip that attractor's figure.
    """
    checked = {key: arrays.get(key) for key in (
        "coords_before", "coords_after", "labels", "clusters_before", "clusters_after",
        *PER_ATTRACTOR_ARRAYS,
    )}
    unknown = sorted(set(arrays) - set(checked))
    if unknown:
        raise ValueError(f"unknown key(s) in arrays: {unknown}; expected some of {sorted(checked)}")

    n_samples = None
    for name in ("coords_before", "coords_after"):
        if checked[name] is not None:
            checked[name] = np.asarray(checked[name], dtype=float)
            n_samples = _check_rows(name, checked[name], n_samples, n_columns=2)
    for name in ("labels", "clusters_before", "clusters_after"):
        if checked[name] is not None:
            checked[name] = np.asarray(checked[name]).astype(int, copy=False)
            n_samples = _check_rows(name, checked[name], n_samples)

    n_attractors = len(report["attractors"])
    for name in PER_ATTRACTOR_ARRAYS:
        if checked[name] is not None and len(checked[name]) != n_attractors:
            raise ValueError(
                f"arrays[{name!r}] has {len(checked[name])} entries but the audit lists "
                f"{n_attractors} attractor(s); pass one entry per attractor (None to skip one)"
            )
    if checked["attractor_masks"] is not None:
        checked["attractor_masks"] = [
            None if mask is None else np.asarray(mask, dtype=bool) for mask in checked["attractor_masks"]
        ]
        for index, mask in enumerate(checked["attractor_masks"]):
            if mask is not None:
                n_samples = _check_rows(f"attractor_masks[{index}]", mask, n_samples)
    return checked


def _check_rows(name: str, array: np.ndarray, n_samples: int | None, n_columns: int | None = None) -> int:
    """Check the row count (and column count) of one array and return its row count."""
    expected = "(n_samples,)" if n_columns is None else f"(n_samples, {n_columns})"
    ndim = 1 if n_columns is None else 2
    if array.ndim != ndim or (n_columns is not None and array.shape[1] != n_columns):
        raise ValueError(f"arrays[{name!r}] has shape {array.shape}; expected {expected}")
    if n_samples is not None and array.shape[0] != n_samples:
        raise ValueError(
            f"arrays[{name!r}] has {array.shape[0]} rows but earlier arrays have {n_samples}; "
            "every per-input array must cover the same inputs in the same order"
        )
    return array.shape[0]


def _cluster_scatter(report: dict, arrays: dict) -> dict | None:
    """Build the before/after scatter coloured by cluster, with its caption."""
    coords_before = arrays["coords_before"]
    if coords_before is None:
        return None
    n_samples = coords_before.shape[0]
    clusters_before = _clusters_or_noise(arrays["clusters_before"], n_samples)
    members = _any_member(arrays["attractor_masks"], n_samples)
    rows = plots.subsample_by_cluster(clusters_before)

    panels = [{
        "title": _before_title(report),
        "coords": coords_before[rows],
        "clusters": clusters_before[rows],
        "highlight": members[rows],
        "labels": _attractor_labels(report, arrays["attractor_masks"], coords_before),
    }]
    if arrays["coords_after"] is not None:
        clusters_after = _clusters_or_noise(arrays["clusters_after"], n_samples)
        panels.append({
            "title": "after retraining",
            "coords": arrays["coords_after"][rows],
            "clusters": clusters_after[rows],
            "highlight": members[rows],
            "labels": _new_attractor_labels(report, arrays["coords_after"], arrays["clusters_after"]),
        })
    return {
        "uri": plots.scatter_by_cluster(panels),
        "sample_note": _sample_note(rows.size, n_samples, has_after=len(panels) == 2),
        "has_after": len(panels) == 2,
    }


def _class_scatter(report: dict, arrays: dict) -> dict | None:
    """Build the before/after scatter coloured by class, when labels are given."""
    if arrays["coords_before"] is None or arrays["labels"] is None:
        return None
    n_samples = arrays["coords_before"].shape[0]
    rows = plots.subsample_by_cluster(_clusters_or_noise(arrays["clusters_before"], n_samples))
    panels = [{"title": _before_title(report), "coords": arrays["coords_before"][rows],
               "labels": arrays["labels"][rows]}]
    if arrays["coords_after"] is not None:
        panels.append({"title": "after retraining", "coords": arrays["coords_after"][rows],
                       "labels": arrays["labels"][rows]})
    return {
        "uri": plots.scatter_by_class(panels, report["data"]["class_names"]),
        "sample_note": _sample_note(rows.size, n_samples, has_after=len(panels) == 2),
    }


def _before_title(report: dict) -> str:
    """Title the first scatter panel, which is "before" only when the audit retrained the model."""
    return "before retraining" if report["kind"] == "run" else "model under audit"


def _clusters_or_noise(clusters: np.ndarray | None, n_samples: int) -> np.ndarray:
    """Return the cluster ids, or all noise when none were given."""
    return np.full(n_samples, NOISE_LABEL) if clusters is None else clusters


def _any_member(masks: list | None, n_samples: int) -> np.ndarray:
    """Return True for rows in any attractor's member set."""
    members = np.zeros(n_samples, dtype=bool)
    for mask in masks or []:
        if mask is not None:
            members |= mask
    return members


def _attractor_labels(report: dict, masks: list | None, coords: np.ndarray) -> list:
    """Place an "A<id>" label at the median position of each attractor's members."""
    labels = []
    for attractor, mask in zip(report["attractors"], masks or []):
        if mask is not None and mask.any():
            x, y = np.median(coords[mask], axis=0)
            labels.append((x, y, f"A{attractor['id']}"))
    return labels


def _new_attractor_labels(report: dict, coords: np.ndarray, clusters: np.ndarray | None) -> list:
    """Label clusters that verification reported as new attractors after retraining."""
    if clusters is None or not report["verification"]:
        return []
    labels = []
    for new in report["verification"]["new_attractors"]:
        rows = clusters == new["cluster_id"]
        if rows.any():
            x, y = np.median(coords[rows], axis=0)
            labels.append((x, y, f"new {new['cluster_id']}"))
    return labels


def _sample_note(n_shown: int, n_samples: int, *, has_after: bool) -> str | None:
    """Describe the subsample in words, or return None when every point is drawn."""
    if n_shown == n_samples:
        return None
    note = f"Showing {n_shown:,} of {n_samples:,} points: a random sample stratified by cluster"
    if has_after:
        return note + f" before retraining (seed {plots.SUBSAMPLE_SEED}), the same rows in every panel."
    return note + f" (seed {plots.SUBSAMPLE_SEED})."


def _label_namer(class_names: list[str]):
    """Return a function that shows an integer class code as its class name."""
    def name(value):
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(class_names):
            return class_names[value]
        return "n/a" if value is None else str(value)
    return name


def _attractor_evidence(attractor: dict, index: int, arrays: dict) -> dict:
    """Build one attractor's evidence figures and highlighted texts."""
    images = _entry(arrays["member_images"], index)
    attribution = _entry(arrays["attribution_maps"], index)
    examples = _entry(arrays["probe_examples"], index)
    texts = _entry(arrays["member_texts"], index)

    evidence = {"images": None, "attribution": None, "probe": None, "texts": None}
    mean_image = None
    if images is not None and len(images):
        images = np.asarray(images, dtype=float)
        evidence["images"] = plots.image_grid(images)
        mean_image = images.mean(axis=0)
    if attribution is not None:
        # The probe box is in pixels, so it is drawn only over the mean image.
        box = (attractor["probe"] or {}).get("box") if mean_image is not None else None
        evidence["attribution"] = {
            "uri": plots.attribution_overlay(attribution, mean_image, box=box),
            "over_mean": mean_image is not None,
            "box": box,
        }
    if examples is not None:
        evidence["probe"] = plots.probe_examples(examples["original"], examples["removed"],
                                                 examples["pasted"])
    if texts is not None:
        tokens = _entry(arrays["highlight_tokens"], index) or []
        evidence["texts"] = [highlight_tokens(text, tokens) for text in texts[:MAX_TEXTS_SHOWN]]
    return evidence


def _entry(values: list | None, index: int):
    """Return ``values[index]``, or None when the whole list is absent."""
    return None if values is None else values[index]


def highlight_tokens(text: str, tokens: list[str]) -> Markup:
    """Escape ``text`` and wrap each occurrence of an attributed token in ``<mark>``.

    Tokens match whole words, ignoring case. Texts longer than
    ``MAX_TEXT_CHARS`` are cut (with an ellipsis) before matching.
    """
    text = str(text)
    if len(text) > MAX_TEXT_CHARS:
        text = text[:MAX_TEXT_CHARS] + "\u2026"
    words = sorted({str(token) for token in tokens if str(token).strip()}, key=len, reverse=True)
    if not words:
        return escape(text)

    pattern = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, words)) + r")(?!\w)", re.IGNORECASE)
    pieces = []
    position = 0
    for match in pattern.finditer(text):
        pieces.append(escape(text[position:match.start()]))
        pieces.append(Markup("<mark>{}</mark>").format(match.group(0)))
        position = match.end()
    pieces.append(escape(text[position:]))
    return Markup("").join(pieces)


def _training_runs(training: dict | None) -> list:
    """List the (name, TrainInfo) pairs that are present."""
    if not training:
        return []
    runs = [("baseline", training["baseline"])]
    if training.get("retrained"):
        runs.append(("retrained", training["retrained"]))
    return runs


def _loss_figure(training: dict | None) -> str | None:
    """Plot loss per epoch for every training run that recorded a loss."""
    histories = {name: info["history"] for name, info in _training_runs(training)}
    if not any(entry["loss"] is not None for history in histories.values() for entry in history):
        return None
    return plots.loss_curves(histories)
