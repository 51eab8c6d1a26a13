"""The ``mitigate run`` loop for text recipes (``[data] modality = "text"``).

The stages mirror the image loop in :mod:`mitigate.run`. The loop loads
and plants the texts, fine-tunes, extracts and detects on the audit split,
and probes with word attribution and template probes. It then diagnoses,
applies counterfactual text augmentation, retrains, verifies on the same
audit texts with the same scores, and writes the report. The planted
ground truth is used for the worst-group groups and the evaluation only,
and detection, probes and the remedy never see it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mitigate.audit import (
    attractor_record,
    cluster_snapshot,
    environment_info,
    new_audit,
    verification_checks,
    write_report,
)
from mitigate.pipeline import make_detector, prepare_output, retraining_recipe
from mitigate.recipe import Recipe, RecipeError
from mitigate.run import (
    Finding,
    RemedyNotApplicable,
    _detection_settings,
    _evaluate,
    _groups,
)

logger = logging.getLogger(__name__)

# Member texts shown per attractor in the report.
REPORT_TEXTS = 24


def run_text_recipe(recipe: Recipe, out_dir: Path, *, data_dir: Path | None = None,
                    restart: bool = False, progress: bool = True) -> dict:
    """Run the whole loop for a text recipe and write the report into ``out_dir``.

    Returns
    -------
    dict
        The audit, as written to ``out_dir / "report.json"``.
    """
    from mitigate.text.data import load_text_audit_data
    from mitigate.text.model import encode_texts, load_tokenizer

    _check_text_recipe(recipe)
    work = prepare_output(out_dir, recipe, restart=restart)
    data = load_text_audit_data(recipe, data_dir)
    labels = data.splits.audit_labels
    tokenizer = load_tokenizer(recipe["model"]["factory"], recipe["text"]["tokenizer"] or None)
    max_length = recipe["text"]["max_length"]
    audit_packed = encode_texts(tokenizer, data.audit_texts, max_length=max_length)

    # Stage 1: the baseline model and its audit.
    baseline, baseline_info = _train(recipe, data.train_texts, data, tokenizer, out_dir, work, progress,
                                     name="baseline")
    before = _audit_text_model(recipe, baseline, tokenizer, audit_packed, labels, progress)

    # Stage 2: probe and diagnose every flagged attractor.
    findings = [
        _investigate(recipe, cluster, data, before)
        for cluster in before["detector"].attractors_[: recipe["probe"]["max_attractors"]]
    ]
    groups, group_definition = _groups(data, findings, labels)
    sizes = (len(data.train_texts), len(data.audit_texts))
    audit = new_audit(recipe, data, baseline_info, environment_info(), n_inputs=sizes)
    audit["detection_settings"] = _detection_settings(before["detector"])
    audit["before"] = cluster_snapshot(before, labels, groups, group_definition)
    if not findings:
        audit["verdict"] = "no attractor found"
        audit["verdict_reasons"] = ["no cluster met every flagging criterion"]
        write_report(out_dir, audit, before, None, [], data, text_arrays=_text_arrays(data, []))
        return audit

    # Stage 3: the remedy for the strongest attractor, then retraining.
    primary = findings[0]
    try:
        train_texts = _remedied_texts(recipe, primary, data)
    except RemedyNotApplicable as err:
        audit["attractors"] = [attractor_record(i, f, before, None, labels, data, primary is f, [])
                               for i, f in enumerate(findings)]
        audit["verdict"] = "not mitigated"
        audit["verdict_reasons"] = [f"the remedy could not be applied: {err}"]
        write_report(out_dir, audit, before, None, findings, data, text_arrays=_text_arrays(data, findings))
        return audit
    retrained, retrained_info = _train(retraining_recipe(recipe), train_texts, data, tokenizer, out_dir,
                                       work, progress, name="retrained")
    audit["model"]["retrained_weights"] = "retrained/model.safetensors"
    audit["training"]["retrained"] = retrained_info

    # Stage 4: verification on the same audit texts with the same settings.
    after = _audit_text_model(recipe, retrained, tokenizer, audit_packed, labels, progress)
    audit["after"] = cluster_snapshot(after, labels, groups, group_definition)
    _verify(recipe, audit, before, after, findings, data, groups)
    write_report(out_dir, audit, before, after, findings, data, text_arrays=_text_arrays(data, findings))
    return audit


def _train(recipe, texts, data, tokenizer, out_dir, work, progress, *, name: str):
    """Fine-tune the ``name`` model ("baseline" or "retrained") on ``texts``."""
    from mitigate.text.model import encode_texts
    from mitigate.text.train import train_text_classifier

    packed = encode_texts(tokenizer, texts, max_length=recipe["text"]["max_length"])
    return train_text_classifier(
        recipe, packed, data.splits.train_labels, tokenizer=tokenizer,
        n_classes=len(data.splits.class_names), weights_path=out_dir / name / "model.safetensors",
        checkpoint_dir=work / f"checkpoint_{name}", progress=progress, tracker_dir=out_dir / "tracking",
    )


def _verify(recipe, audit, before, after, findings, data, groups) -> None:
    """Fill in the verification checks, attractor records, verdict and evaluation."""
    labels = data.splits.audit_labels
    checks, new = verification_checks(recipe, before, after, findings, labels, groups)
    audit["verification"] = {"checks": checks, "new_attractors": new}
    audit["attractors"] = [
        attractor_record(i, f, before, after, labels, data, i == 0, checks)
        for i, f in enumerate(findings)
    ]
    failed = [c for c in checks if not c["passed"]]
    audit["verdict"] = "not mitigated" if failed else "mitigated"
    audit["verdict_reasons"] = [c["detail"] for c in (failed or checks)]
    _evaluate(audit, data, findings, before["detector"].labels_)


def _check_text_recipe(recipe: Recipe) -> None:
    """Reject settings that only make sense for images, naming the fix."""
    model = recipe["model"]
    if model["factory"] == "builtin:small_cnn":
        raise RecipeError("[model] factory = 'builtin:small_cnn' is an image model; text recipes take "
                          "'builtin:minilm', 'builtin:tiny_bert' or a local model folder")
    if model["pooling"] not in ("mean", "first"):
        raise RecipeError(f"[model] pooling = {model['pooling']!r} is not available for text; "
                          "use 'mean' or 'first'")
    if recipe["data"]["dataset"] not in ("wordnet", "from_disk"):
        raise RecipeError(f"[data] dataset = {recipe['data']['dataset']!r} contains images; text recipes "
                          "take 'wordnet' or 'from_disk'")


def _audit_text_model(recipe, model, tokenizer, packed, labels, progress) -> dict:
    from mitigate.text.model import extract_texts, make_text_embedder, make_text_predictor

    layer, pooling = recipe["model"]["layer"], recipe["model"]["pooling"]
    batch_size, max_length = recipe["text"]["batch_size"], recipe["text"]["max_length"]
    embeddings, predictions, confidence = extract_texts(
        model, packed, layer=layer, pooling=pooling, batch_size=batch_size, progress=progress,
    )
    detector = make_detector(recipe).fit(embeddings, labels, predictions)
    return {
        "model": model,
        "embeddings": embeddings,
        "predictions": predictions,
        "confidence": confidence,
        "detector": detector,
        "embed": make_text_embedder(model, tokenizer, layer=layer, pooling=pooling,
                                    max_length=max_length, batch_size=batch_size),
        "predict": make_text_predictor(model, tokenizer, max_length=max_length, batch_size=batch_size),
    }


def _investigate(recipe, cluster, data, before) -> Finding:
    from mitigate.diagnose import effective_rank, training_presence_by_class
    from mitigate.remedies import choose_remedy
    from mitigate.text.diagnose import diagnose_text_attractor
    from mitigate.text.probes import find_token_clusters, probe_text_cluster, token_presence

    detector = before["detector"]
    text, seed = recipe["text"], recipe["detect"]["seed"]
    common = dict(embed=before["embed"], assign=detector.assign)
    probe = probe_text_cluster(
        data.audit_texts, detector.labels_, cluster.cluster_ids, before["embeddings"],
        predict=before["predict"], labels=data.splits.audit_labels, class_names=data.splits.class_names,
        top_tokens=text["top_tokens"], control_token=text["control_token"] or None,
        where=text["plant_position"], max_probe=recipe["probe"]["max_members"], seed=seed, **common,
    )
    presence = None
    if probe.causal:
        find_token_clusters(data.audit_texts, detector.labels_, probe, cluster.cluster_ids, seed=seed,
                            **common)
        carried = token_presence(data.train_texts, probe.token)
        presence = training_presence_by_class(carried, data.splits.train_labels)

    embeddings = before["embeddings"]
    diagnosis = diagnose_text_attractor(
        cluster, probe, presence_by_class=presence, class_names=data.splits.class_names,
        rank_share=effective_rank(embeddings) / embeddings.shape[1],
    )
    choice = choose_remedy(diagnosis.cause, forced=recipe["remedy"]["method"])
    mask = np.zeros(embeddings.shape[0], dtype=bool)
    mask[cluster.members] = True
    logger.info("attractor (clusters %s, %d members): word %r, cause %s, remedy %s",
                cluster.cluster_ids, cluster.size, probe.token, diagnosis.cause, choice.remedy)
    return Finding(cluster, probe, diagnosis, choice, mask)


def _remedied_texts(recipe, finding, data) -> list:
    """Return the training texts after the chosen remedy (counterfactual augmentation only)."""
    from mitigate.text.augment import counterfactual_augment_texts

    remedy = finding.choice.remedy
    if remedy is None:
        raise RemedyNotApplicable(finding.choice.reason)
    if remedy != "counterfactual_augmentation":
        raise RemedyNotApplicable(f"remedy {remedy!r} is not implemented for text recipes; "
                                  "set [remedy] method = 'counterfactual_augmentation'")
    if finding.probe is None or not finding.probe.causal:
        raise RemedyNotApplicable(
            "counterfactual augmentation needs a found word, but no attributed word moves inputs "
            "in and out of the attractor"
        )
    texts, stats = counterfactual_augment_texts(
        data.train_texts, data.splits.train_labels, tokens=[finding.probe.token],
        mode=recipe["text"]["augment_mode"], insert_rate=float(recipe["remedy"]["paste_rate"]),
        where=recipe["text"]["plant_position"], seed=recipe["remedy"]["seed"],
    )
    finding.choice.stats = stats
    return texts


def _text_arrays(data, findings) -> dict:
    """Member texts and attributed words per attractor, for the report."""
    return {
        "member_texts": [[data.audit_texts[i] for i in np.flatnonzero(f.mask)[:REPORT_TEXTS]]
                         for f in findings],
        "highlight_tokens": [f.probe.highlight_words if f.probe is not None else [] for f in findings],
    }
