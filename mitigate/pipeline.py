"""The full loop behind ``mitigate run``: train, detect, probe, remedy, retrain, verify, report.

Each stage writes its outputs atomically under the output folder. A run
interrupted after a model was saved reuses that model when restarted with the
same ``--out`` and the same recipe; training interrupted mid-way resumes from
its last checkpoint.
"""

from __future__ import annotations

import copy
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mitigate import data as image_data
from mitigate.files import load_weights, save_weights, write_json
from mitigate.recipe import Recipe

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"

# [plant] kinds that plant the mitigate.plants benchmark of the same mechanism name.
PLANTED_MECHANISMS = ("representational_collapse", "gradient_starvation", "data_artifact")


class OutputFolderError(ValueError):
    """The output folder holds a run of another recipe."""


@dataclass
class AuditData:
    """Train and audit images, after planting, with the ground truth kept apart.

    ``planted_audit`` is the planted member set, for evaluation and
    worst-group groups only. ``model_kwargs`` are the model settings the
    plant needs (for example ``embedding_dim=3`` for representational
    collapse), and ``benchmark`` is the :class:`mitigate.plants.PlantedBenchmark`
    behind a ``mitigate.plants`` kind (None otherwise).
    """

    splits: image_data.ImageSplits
    train_images: np.ndarray
    audit_images: np.ndarray
    planted_train: np.ndarray | None
    planted_audit: np.ndarray | None
    plant_description: str | None
    model_kwargs: dict = field(default_factory=dict)
    benchmark: object = None

    def resolve_truth(self, audit_embeddings: np.ndarray) -> None:
        """Fill in a member set that depends on the trained model, from its audit embeddings.

        Only the representational-collapse benchmark needs this, because its
        members are the rows embedded at exactly zero. For every other plant
        the planted member set is kept as it is.
        """
        if self.benchmark is None:
            return
        self.planted_audit = self.benchmark.resolve_truth(audit_embeddings)
        if self.planted_audit is not None and self.benchmark.mechanism == "representational_collapse":
            self.plant_description = (f"{self.benchmark.description} "
                                      f"({int(self.planted_audit.sum())} audit rows)")


def prepare_output(out_dir: Path, recipe: Recipe, *, restart: bool) -> Path:
    """Create or reuse ``out_dir``; refuse one that holds another recipe's run."""
    import json

    work = out_dir / "work"
    state_path = work / STATE_FILE
    if restart and out_dir.exists():
        for name in ("work", "baseline", "retrained"):
            shutil.rmtree(out_dir / name, ignore_errors=True)
        logger.info("--restart: cleared the previous run in %s", out_dir)
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        if state.get("fingerprint") != recipe.fingerprint():
            raise OutputFolderError(
                f"{out_dir} holds a run of a different recipe ({state.get('recipe')!r}); "
                "pass a new --out folder, or --restart to discard that run"
            )
        logger.info("resuming the run in %s (same recipe)", out_dir)
    work.mkdir(parents=True, exist_ok=True)
    write_json(state_path, {"fingerprint": recipe.fingerprint(), "recipe": recipe.name})
    return work


def load_audit_data(recipe: Recipe, data_dir: Path | None) -> AuditData:
    """Load the images and plant the recipe's feature (ground truth kept separately)."""
    settings = recipe["data"]
    folder = data_dir or (Path(settings["dir"]) if settings["dir"] else None)
    if settings["dataset"] == "digits":
        splits = image_data.load_digits_fallback()
    else:
        splits = image_data.load_fashion_mnist(folder, fallback=settings["fallback"])
    splits = _limit(splits, settings["train_limit"], settings["audit_limit"])

    plant = recipe["plant"]
    if plant["options"] and plant["kind"] not in PLANTED_MECHANISMS:
        raise ValueError(
            f"[plant] options is set but [plant] kind = {plant['kind']!r} takes no options; remove "
            f"[plant.options] or use one of the kinds {', '.join(PLANTED_MECHANISMS)}"
        )
    if plant["kind"] in PLANTED_MECHANISMS:
        return _load_planted_benchmark(recipe, splits)
    if plant["kind"] == "none":
        return AuditData(splits, splits.train_images, splits.audit_images, None, None, None)

    n_classes = len(splits.class_names)
    if plant["target_class"] >= n_classes:
        raise ValueError(
            f"[plant] target_class = {plant['target_class']} but the data has {n_classes} classes "
            f"(0..{n_classes - 1})"
        )
    side = splits.train_images.shape[-1]
    size = max(1, round(plant["size"] * side / 28))
    box = image_data.square_box(side, size=size, corner=plant["corner"], margin=max(1, side // 28))
    train_images, planted_train = image_data.plant_spurious_square(
        splits.train_images, splits.train_labels, target_class=plant["target_class"],
        p_target=plant["p_target"], p_other=plant["p_other"], box=box,
        intensity=plant["intensity"], seed=plant["seed"],
    )
    audit_images, planted_audit = image_data.plant_spurious_square(
        splits.audit_images, splits.audit_labels, target_class=plant["target_class"],
        p_target=plant["p_audit"], p_other=plant["p_audit"], box=box,
        intensity=plant["intensity"], seed=plant["seed"] + 1,
    )
    target = splits.class_names[plant["target_class"]]
    description = (
        f"a {size}x{size} square of intensity {plant['intensity']} at the {plant['corner'].replace('_', ' ')} "
        f"corner: on {plant['p_target']:.0%} of training images of class {target!r} and "
        f"{plant['p_other']:.1%} of the others; on {plant['p_audit']:.0%} of audit images of every class"
    )
    logger.info("planted %s", description)
    return AuditData(splits, train_images, audit_images, planted_train, planted_audit, description)


def _load_planted_benchmark(recipe: Recipe, splits: image_data.ImageSplits) -> AuditData:
    """Plant the ``mitigate.plants`` benchmark named by ``[plant] kind``."""
    from mitigate.plants import make_benchmark

    plant = recipe["plant"]
    try:
        benchmark = make_benchmark(plant["kind"], splits, seed=plant["seed"], **(plant["options"] or {}))
    except ValueError as err:
        raise ValueError(f"[plant] kind = {plant['kind']!r}: {err}") from err

    # The plant's model settings must not be overridden by [model.kwargs].
    recipe_kwargs = recipe["model"]["kwargs"] or {}
    for key, value in benchmark.model_kwargs.items():
        if key in recipe_kwargs and recipe_kwargs[key] != value:
            raise ValueError(
                f"[model.kwargs] {key} = {recipe_kwargs[key]!r} conflicts with [plant] kind = "
                f"{plant['kind']!r}, which needs {key} = {value!r}; remove {key} from [model.kwargs]"
            )
    return AuditData(
        splits, benchmark.train_images, benchmark.audit_images,
        planted_train=_planted_train_rows(benchmark), planted_audit=benchmark.truth,
        plant_description=benchmark.description, model_kwargs=dict(benchmark.model_kwargs),
        benchmark=benchmark,
    )


def _planted_train_rows(benchmark) -> np.ndarray | None:
    """Return the training rows that carry the planted feature, or None (nothing is pasted)."""
    extra = benchmark.extra
    if "train_carries" in extra:
        return extra["train_carries"]
    if "train_site" in extra:
        return extra["train_site"]
    if "train_codes" in extra:
        return extra["train_codes"] >= 0
    return None


def _limit(splits: image_data.ImageSplits, train_limit: int, audit_limit: int):
    if train_limit:
        splits.train_images = splits.train_images[:train_limit]
        splits.train_labels = splits.train_labels[:train_limit]
    if audit_limit:
        splits.audit_images = splits.audit_images[:audit_limit]
        splits.audit_labels = splits.audit_labels[:audit_limit]
    return splits


def retraining_recipe(recipe: Recipe) -> Recipe:
    """Return ``recipe`` with ``[remedy] epochs`` in place of ``[train] epochs`` when it is set."""
    epochs = recipe["remedy"]["epochs"]
    if not epochs:
        return recipe
    changed = copy.deepcopy(recipe)
    changed["train"]["epochs"] = epochs
    return changed


def build_and_train(recipe: Recipe, images, labels, *, weights_path: Path, checkpoint_dir: Path,
                    n_classes: int, image_size: int, progress: bool, tracker_dir: Path | None,
                    model_factory=None, regularizer=None, input_transform=None, plant_model_kwargs=None):
    """Train a model, or load it if ``weights_path`` exists from an earlier run.

    ``model_factory()`` returns the model to train (default: a fresh model
    from the recipe, seeded by ``[train] seed``, with ``plant_model_kwargs``
    added to ``[model.kwargs]``). ``regularizer`` and ``input_transform`` are
    passed to :func:`mitigate.train.train_classifier`.
    """
    import torch

    from mitigate.train import TrainConfig, TrainResult, train_classifier

    settings = recipe["train"]
    torch.manual_seed(settings["seed"])
    model = model_factory() if model_factory else _build(recipe, n_classes, image_size, plant_model_kwargs)
    if weights_path.is_file():
        logger.info("reusing trained weights %s", weights_path)
        model.load_state_dict(load_weights(weights_path))
        info = _read_train_info(weights_path.parent / "training.json")
        return model, info

    config = TrainConfig(
        epochs=settings["epochs"], batch_size=settings["batch_size"], lr=float(settings["lr"]),
        seed=settings["seed"], mixed_precision=settings["mixed_precision"],
        require_precision=settings["require_precision"], checkpoint_every=settings["checkpoint_every"],
    )
    log_with = None if settings["log_with"] == "none" else settings["log_with"]
    started = time.perf_counter()
    result: TrainResult = train_classifier(
        model, images, labels, config, checkpoint_dir=checkpoint_dir, progress=progress,
        log_with=log_with, project_dir=tracker_dir, regularizer=regularizer,
        embedding_layer=recipe["model"]["layer"] if regularizer else None,
        input_transform=input_transform,
    )
    info = {
        "history": result.history,
        "precision_used": result.precision_used,
        "precision_note": result.precision_note,
        "seconds": round(time.perf_counter() - started, 2),
    }
    save_weights(weights_path, model.state_dict())
    write_json(weights_path.parent / "training.json", info)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return model, info


def _build(recipe: Recipe, n_classes: int, image_size: int, plant_model_kwargs=None):
    from mitigate.models import build_model

    kwargs = {**(recipe["model"]["kwargs"] or {}), **(plant_model_kwargs or {})}
    if recipe["model"]["factory"] == "builtin:small_cnn":
        kwargs.setdefault("num_classes", n_classes)
        kwargs.setdefault("image_size", image_size)
    return build_model(recipe["model"]["factory"], kwargs)


def _read_train_info(path: Path) -> dict:
    import json

    if path.is_file():
        return json.loads(path.read_text())
    return {"history": [], "precision_used": "unknown", "precision_note": "weights reused", "seconds": 0.0}


def make_embedder(model, layer: str, pooling: str, transform=None):
    """Return ``images -> embeddings`` with the model's named layer (no progress bar)."""
    from mitigate.extract import extract_images

    def embed(images: np.ndarray) -> np.ndarray:
        return extract_images(model, np.ascontiguousarray(images, dtype=np.float32),
                              layer=layer, pooling=pooling, transform=transform)[0]

    return embed


def make_detector(recipe: Recipe):
    """Build the detector from the recipe's [detect] section; used before and after."""
    from mitigate.detect import AttractorDetector

    settings = recipe["detect"]
    return AttractorDetector(
        n_neighbors=settings["n_neighbors"],
        min_dist=float(settings["min_dist"]),
        metric=settings["metric"],
        pca_dims=settings["pca_dims"] or None,
        min_cluster_size=settings["min_cluster_size"] or None,
        acs_threshold=float(settings["acs_threshold"]) or None,
        entropy_threshold=float(settings["entropy_threshold"]),
        concentration_threshold=float(settings["concentration_threshold"]),
        accuracy_gap=float(settings["accuracy_gap"]),
        random_state=settings["seed"],
    )
