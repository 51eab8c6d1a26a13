"""Orchestration of ``mitigate run``: the stages in order, then the audit report."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mitigate import scores
from mitigate.audit import (
    attractor_record,
    cluster_snapshot,
    environment_info,
    new_audit,
    reach_mask,
    verification_checks,
    write_report,
)
from mitigate.pipeline import (
    build_and_train,
    load_audit_data,
    make_detector,
    make_embedder,
    prepare_output,
    retraining_recipe,
)
from mitigate.recipe import Recipe, RecipeError

logger = logging.getLogger(__name__)


@dataclass
class Finding:
    """One flagged attractor with its probe, diagnosis and remedy choice."""

    cluster: object
    probe: object
    diagnosis: object
    choice: object
    mask: np.ndarray


def run_recipe(recipe: Recipe, out_dir: Path, *, data_dir: Path | None = None,
               restart: bool = False, progress: bool = True) -> dict:
    """Run the whole loop for ``recipe`` and write the report into ``out_dir``.

    Returns
    -------
    dict
        The audit, as written to ``out_dir / "report.json"``.
    """
    if recipe["data"]["modality"] == "text":
        from mitigate.text.run import run_text_recipe

        return run_text_recipe(recipe, out_dir, data_dir=data_dir, restart=restart, progress=progress)
    if recipe["data"]["dataset"] in ("wordnet", "from_disk"):
        raise RecipeError(f"[data] dataset = {recipe['data']['dataset']!r} contains texts; "
                          "set [data] modality = 'text'")
    work = prepare_output(out_dir, recipe, restart=restart)
    data = load_audit_data(recipe, data_dir)
    labels = data.splits.audit_labels
    n_classes = len(data.splits.class_names)
    image_size = data.train_images.shape[-1]
    layer, pooling = recipe["model"]["layer"], recipe["model"]["pooling"]

    # Stage 1: the baseline model and its audit.
    baseline, baseline_info = build_and_train(
        recipe, data.train_images, data.splits.train_labels,
        weights_path=out_dir / "baseline" / "model.safetensors",
        checkpoint_dir=work / "checkpoint_baseline", n_classes=n_classes,
        image_size=image_size, progress=progress, tracker_dir=out_dir / "tracking",
        plant_model_kwargs=data.model_kwargs,
    )
    before = _audit_model(recipe, baseline, data.audit_images, labels, layer, pooling, progress)
    # A member set that depends on the trained model (representational collapse) is
    # filled in only now, after detection, and is used for evaluation and groups only.
    data.resolve_truth(before["embeddings"])
    _write_model_report(out_dir / "baseline", before, recipe, data, which="baseline")

    # Stage 2: probe and diagnose every flagged attractor.
    findings = [
        _investigate(recipe, cluster, data, before, baseline)
        for cluster in before["detector"].attractors_[: recipe["probe"]["max_attractors"]]
    ]
    groups, group_definition = _groups(data, findings, labels)
    audit = new_audit(recipe, data, baseline_info, environment_info())
    audit["detection_settings"] = _detection_settings(before["detector"])
    audit["before"] = cluster_snapshot(before, labels, groups, group_definition)
    if not findings:
        audit["verdict"] = "no attractor found"
        audit["verdict_reasons"] = ["no cluster met every flagging criterion"]
        write_report(out_dir, audit, before, None, [], data)
        return audit

    # Stage 3: the remedy for the strongest attractor, then retraining.
    primary = findings[0]
    try:
        retrained, retrained_info, transform = _remedy_and_retrain(
            recipe, primary, data, before, out_dir, work, progress)
    except RemedyNotApplicable as err:
        audit["attractors"] = [attractor_record(i, f, before, None, labels, data, primary is f, [])
                               for i, f in enumerate(findings)]
        audit["verdict"] = "not mitigated"
        audit["verdict_reasons"] = [f"the remedy could not be applied: {err}"]
        write_report(out_dir, audit, before, None, findings, data)
        return audit
    audit["model"]["retrained_weights"] = "retrained/model.safetensors"
    audit["training"]["retrained"] = retrained_info

    # Stage 4: verification on the same audit inputs with the same settings.
    after = _audit_model(recipe, retrained, data.audit_images, labels, layer, pooling, progress,
                         transform=transform)
    _write_model_report(out_dir / "retrained", after, recipe, data, which="retrained")
    audit["after"] = cluster_snapshot(after, labels, groups, group_definition)
    checks, new = verification_checks(recipe, before, after, findings, labels, groups)
    audit["verification"] = {"checks": checks, "new_attractors": new}
    audit["attractors"] = [
        attractor_record(i, f, before, after, labels, data, primary is f, checks)
        for i, f in enumerate(findings)
    ]
    failed = [c for c in checks if not c["passed"]]
    audit["verdict"] = "not mitigated" if failed else "mitigated"
    audit["verdict_reasons"] = [c["detail"] for c in (failed or checks)]
    _evaluate(audit, data, findings, before["detector"].labels_)
    write_report(out_dir, audit, before, after, findings, data)
    return audit


def _audit_model(recipe, model, images, labels, layer, pooling, progress, transform=None) -> dict:
    from mitigate.extract import extract_images

    # Under accelerate launch each process extracts its shard; all get every row.
    embeddings, predictions, confidence = extract_images(
        model, images, layer=layer, pooling=pooling, progress=progress, transform=transform,
        distributed=True,
    )
    detector = make_detector(recipe).fit(embeddings, labels, predictions)
    return {
        "model": model,
        "embeddings": embeddings,
        "predictions": predictions,
        "confidence": confidence,
        "detector": detector,
        "embed": make_embedder(model, layer, pooling, transform),
    }


def _write_model_report(folder: Path, state: dict, recipe, data, *, which: str) -> None:
    """Write one model's detection-only report, built as by ``mitigate detect``.

    Two such reports of the same audit inputs (``OUT/baseline`` and
    ``OUT/retrained``) are what ``mitigate report compare`` takes.
    """
    from mitigate.detect_command import detect_report, write_detect_report
    from mitigate.extract import is_main_process

    if not is_main_process():
        return
    labels = data.splits.audit_labels
    audit = detect_report(
        state["detector"], labels=labels, predictions=state["predictions"],
        class_names=data.splits.class_names,
        source=(f"{data.splits.source}: audit split, layer {recipe['model']['layer']!r} of the "
                f"{which} model ({which}/model.safetensors)"),
        recipe={"name": recipe.name, "path": str(recipe.path) if recipe.path else None,
                "settings": recipe.settings},
        environment=environment_info(),
    )
    write_detect_report(folder, audit, state["detector"], label_codes=labels)


def _investigate(recipe, cluster, data, before, model) -> Finding:
    from mitigate.diagnose import investigate_image_attractor
    from mitigate.probes import find_feature_clusters
    from mitigate.remedies import choose_remedy

    detector = before["detector"]
    settings = recipe["probe"]
    image_size = data.audit_images.shape[-1]
    fill, seed = float(settings["fill"]), recipe["detect"]["seed"]

    # Occlusion and pattern probes, training-data presence and label information of a
    # located region, and the effective rank: the evidence the diagnosis rules need.
    diagnosis, evidence = investigate_image_attractor(
        cluster, detector=detector, audit_images=data.audit_images,
        audit_labels=data.splits.audit_labels, audit_embeddings=before["embeddings"],
        train_images=data.train_images, train_labels=data.splits.train_labels,
        embed=before["embed"], class_names=data.splits.class_names,
        cell=settings["cell"] or max(1, image_size // 7), fill=fill,
        max_probe=settings["max_members"], seed=seed,
    )
    probe = evidence.probe
    if probe.causal:
        find_feature_clusters(data.audit_images, detector.labels_, probe, cluster.cluster_ids,
                              embed=before["embed"], assign=detector.assign, fill=fill, seed=seed)

    embeddings = before["embeddings"]
    choice = choose_remedy(diagnosis.cause, forced=recipe["remedy"]["method"],
                           embedding_width=embeddings.shape[1], n_classes=len(data.splits.class_names),
                           feature_located=bool(probe.causal))
    mask = np.zeros(embeddings.shape[0], dtype=bool)
    mask[cluster.members] = True
    logger.info("attractor (clusters %s, %d members): cause %s, remedy %s",
                cluster.cluster_ids, cluster.size, diagnosis.cause, choice.remedy)
    return Finding(cluster, probe, diagnosis, choice, mask)


class RemedyNotApplicable(RuntimeError):
    """Error raised when the chosen remedy cannot run on this evidence; the report gives the reason."""


def _remedy_and_retrain(recipe, finding, data, before, out_dir, work, progress):
    """Apply the chosen remedy and retrain; return (model, training info, input transform)."""
    from mitigate import remedies

    remedy = finding.choice.remedy
    if remedy is None:
        raise RemedyNotApplicable(finding.choice.reason)
    settings = recipe["remedy"]
    recipe = retraining_recipe(recipe)
    common = dict(
        weights_path=out_dir / "retrained" / "model.safetensors",
        checkpoint_dir=work / "checkpoint_retrained", n_classes=len(data.splits.class_names),
        image_size=data.train_images.shape[-1], progress=progress, tracker_dir=out_dir / "tracking",
        plant_model_kwargs=data.model_kwargs,
    )
    images, labels = data.train_images, data.splits.train_labels

    if remedy == "counterfactual_augmentation":
        if finding.probe is None or not finding.probe.causal:
            raise RemedyNotApplicable(
                "counterfactual augmentation needs a located feature, but the probes found no region "
                "that moves inputs in and out of the attractor"
            )
        mode = remedies.augmentation_mode(finding.diagnosis.cause, settings["augmentation"])
        finding.choice.reason += f" (augmentation form: {mode})"
        if mode == "swap":
            images, stats = remedies.swap_region_images(images, box=finding.probe.box, seed=settings["seed"])
        else:
            images, stats = remedies.counterfactual_augment_images(
                images, box=finding.probe.box, patch=finding.probe.patch,
                paste_rate=float(settings["paste_rate"]), fill=float(recipe["probe"]["fill"]),
                seed=settings["seed"],
            )
        finding.choice.stats = stats
        return (*build_and_train(recipe, images, labels, **common), None)

    if remedy in remedies.REGULARIZER_REMEDIES:
        members = None
        if remedy == "collapse_penalty":
            train_embeddings = before["embed"](images)
            members = np.isin(before["detector"].assign(train_embeddings), finding.cluster.cluster_ids)
        regularizer = remedies.build_regularizer(
            remedy, weight=float(settings["weight"]), warmup_steps=settings["warmup_steps"],
            train_members=members,
        )
        return (*build_and_train(recipe, images, labels, regularizer=regularizer, **common), None)

    if remedy == "wider_bottleneck":
        return (*build_and_train(recipe, images, labels,
                                 model_factory=lambda: _widened(recipe, before["model"], images), **common),
                None)

    if remedy == "artifact_stripping":
        inside = finding.mask
        stripper = remedies.derive_stripper(
            finding.probe, data.audit_images[inside], data.audit_images[~inside],
            image_area=int(np.prod(data.audit_images.shape[-2:])), fill=float(recipe["probe"]["fill"]),
        )
        model, info = build_and_train(recipe, images, labels, input_transform=stripper, **common)
        stripper.save(out_dir / "retrained" / "artifact_stripper")
        return model, info, stripper
    raise RemedyNotApplicable(f"remedy {remedy!r} is not implemented for image recipes")


def _widened(recipe, baseline, images):
    """Return a copy of the baseline with its embedding layer widened (Net2Net)."""
    import copy

    import torch

    from mitigate.widen import layer_width, widen

    model = copy.deepcopy(baseline)
    layer = recipe["model"]["layer"]
    example = torch.from_numpy(np.ascontiguousarray(images[:2]))
    new_width = recipe["remedy"]["widen_to"] or 4 * layer_width(model, layer)
    info = widen(model, layer, new_width=new_width, example_input=example, noise=0.01,
                 seed=recipe["remedy"]["seed"], init=recipe["remedy"]["widen_init"])
    logger.info("widened %s from %d to %d units (%s new units, consumer %s)",
                info["layer"], info["old_width"], info["new_width"], info["init"], info["consumer"])
    return model


def _groups(data, findings, labels):
    """Groups for worst-group accuracy: ground truth when planted, else found membership."""
    if data.planted_audit is not None:
        return labels * 2 + data.planted_audit.astype(np.int64), \
            "class x planted feature (ground truth, used for evaluation only)"
    member = np.zeros(labels.shape[0], dtype=np.int64)
    for finding in findings:
        member |= finding.mask.astype(np.int64)
    return labels * 2 + member, "class x member of a flagged attractor"


def _detection_settings(detector) -> dict:
    settings = dict(detector.settings_)
    settings.update(
        acs_threshold=detector.acs_threshold_,
        acs_reference=detector.acs_reference_,
        entropy_threshold=detector.entropy_threshold,
        concentration_threshold=detector.concentration_threshold,
        accuracy_gap=detector.accuracy_gap,
    )
    return settings


def _evaluate(audit, data, findings, cluster_labels) -> None:
    """Score the primary attractor's members against the planted group."""
    if data.planted_audit is None or not findings:
        return
    primary = findings[0]
    core = scores.precision_recall_f1(primary.mask, data.planted_audit)
    # The reach equals the members when the probes tied no other cluster to the feature.
    extended = scores.precision_recall_f1(reach_mask(primary, cluster_labels), data.planted_audit)
    audit["evaluation"] = {"planted_group": data.plant_description, "core": core, "extended": extended}
