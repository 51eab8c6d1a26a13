"""Text data for ``mitigate run``: any labelled ``datasets`` data set, split and planted.

Two sources: WordNet noun glosses (``[data] dataset = "wordnet"``) and any
Hugging Face data set saved with ``save_to_disk`` (``dataset = "from_disk"``),
whose text and label columns are named in ``[text]``. A ``DatasetDict`` with
a train and an audit split is used as it is; a single ``Dataset`` is split
with a seeded, per-class shuffle.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mitigate.data import DataNotFoundError
from mitigate.recipe import Recipe, RecipeError
from mitigate.text.words import contains_word, insert_positions, insert_word, normalize_word, word_spans

logger = logging.getLogger(__name__)

TEXT_DATASETS = ("wordnet", "from_disk")


@dataclass
class TextSplits:
    """Train and audit texts with integer labels, before planting."""

    train_texts: list
    train_labels: np.ndarray
    audit_texts: list
    audit_labels: np.ndarray
    class_names: tuple
    source: str


@dataclass
class TextAuditData:
    """Train and audit texts after planting, with the ground truth kept apart.

    ``planted_train`` and ``planted_audit`` mark the texts that carry the
    planted token; they are used for evaluation only.
    """

    splits: TextSplits
    train_texts: list
    audit_texts: list
    planted_train: np.ndarray | None
    planted_audit: np.ndarray | None
    plant_description: str | None


def dataset_to_arrays(dataset, *, text_column: str = "text", label_column: str = "label"):
    """Return ``(texts, label codes, class names)`` from a ``datasets.Dataset``.

    A ``ClassLabel`` column keeps its names; string labels are coded in sorted
    order; other integer labels are named by their value.

    Raises
    ------
    ValueError
        When a column is missing, a text is not a string, or labels are missing.
    """
    for role, column in (("text_column", text_column), ("label_column", label_column)):
        if column not in dataset.column_names:
            raise ValueError(f"[text] {role} = {column!r} is not a column of the data set; "
                             f"its columns are {dataset.column_names}")
    texts = list(dataset[text_column])
    bad = [i for i, text in enumerate(texts) if not isinstance(text, str)]
    if bad:
        raise ValueError(f"column {text_column!r} must hold strings; rows {bad[:5]} do not")

    raw = list(dataset[label_column])
    if any(value is None for value in raw):
        raise ValueError(f"column {label_column!r} has missing labels; drop or fill those rows first")
    feature = dataset.features[label_column]
    names = getattr(feature, "names", None)
    if names is not None:
        return texts, np.asarray(raw, dtype=np.int64), tuple(str(name) for name in names)
    classes, codes = np.unique(np.asarray(raw), return_inverse=True)
    return texts, codes.astype(np.int64), tuple(str(value) for value in classes)


def split_per_class(labels: np.ndarray, *, audit_share: float, train_per_class: int,
                    audit_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return sorted train and audit row indices, drawn per class after a seeded shuffle.

    Per class, the audit split takes ``audit_per_class`` rows (0: the
    ``audit_share`` of the class) and the train split up to
    ``train_per_class`` of the rest (0: all of the rest).
    """
    rng = np.random.default_rng(seed)
    train, audit = [], []
    for code in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == code))
        n_audit = audit_per_class or int(round(audit_share * rows.size))
        if n_audit >= rows.size:
            warnings.warn(
                f"class {code} has {rows.size} rows, not enough for {n_audit} audit rows and a "
                f"training share; using {rows.size // 2} for the audit split",
                UserWarning, stacklevel=2,
            )
            n_audit = rows.size // 2
        audit.append(rows[:n_audit])
        rest = rows[n_audit:]
        train.append(rest[:train_per_class] if train_per_class else rest)
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(audit))


def load_text_splits(recipe: Recipe, data_dir: Path | None) -> TextSplits:
    """Load the recipe's text data set and return its train and audit splits."""
    data, text = recipe["data"], recipe["text"]
    folder = data_dir or (Path(data["dir"]) if data["dir"] else None)
    columns = dict(text_column=text["text_column"], label_column=text["label_column"])
    if data["dataset"] == "wordnet":
        from mitigate.text.wordnet import read_wordnet_glosses

        dataset = read_wordnet_glosses(folder, categories=tuple(text["categories"]),
                                       examples=text["gloss_examples"])
        source = f"WordNet noun glosses ({', '.join(text['categories'])})"
        return _split_dataset(dataset, recipe, source, columns)
    if data["dataset"] != "from_disk":
        raise RecipeError(f"[data] dataset = {data['dataset']!r} is not a text data set; with "
                          f"modality = 'text' use one of {TEXT_DATASETS}")
    if folder is None:
        raise RecipeError("[data] dataset = 'from_disk' needs [data] dir (or --data-dir): the folder "
                          "written by Dataset.save_to_disk")
    dataset = _load_from_disk(folder)
    if hasattr(dataset, "keys"):
        return _dict_splits(dataset, text, columns, source=f"datasets folder {folder}")
    return _split_dataset(dataset, recipe, f"datasets folder {folder}", columns)


def _load_from_disk(folder: Path):
    from datasets import load_from_disk

    if not Path(folder).is_dir():
        raise DataNotFoundError(f"data set folder not found: {folder}; pass the folder written by "
                                "Dataset.save_to_disk in [data] dir or --data-dir")
    return load_from_disk(str(folder))


def _split_dataset(dataset, recipe: Recipe, source: str, columns: dict) -> TextSplits:
    text = recipe["text"]
    texts, codes, names = dataset_to_arrays(dataset, **columns)
    train_rows, audit_rows = split_per_class(
        codes, audit_share=float(text["audit_share"]), train_per_class=text["train_per_class"],
        audit_per_class=text["audit_per_class"], seed=text["split_seed"],
    )
    return TextSplits(
        train_texts=[texts[i] for i in train_rows], train_labels=codes[train_rows],
        audit_texts=[texts[i] for i in audit_rows], audit_labels=codes[audit_rows],
        class_names=names, source=source,
    )


def _dict_splits(dataset_dict, text: dict, columns: dict, *, source: str) -> TextSplits:
    missing = [name for name in (text["train_split"], text["audit_split"]) if name not in dataset_dict]
    if missing:
        raise RecipeError(f"[text] split name(s) {missing} not in the saved DatasetDict; its splits are "
                          f"{list(dataset_dict.keys())}. Set [text] train_split and audit_split")
    train_texts, train_codes, names = dataset_to_arrays(dataset_dict[text["train_split"]], **columns)
    audit_texts, audit_codes, audit_names = dataset_to_arrays(dataset_dict[text["audit_split"]], **columns)
    if audit_names != names:
        raise ValueError(f"the train and audit splits name different classes: {names} and {audit_names}")
    return TextSplits(train_texts, train_codes, audit_texts, audit_codes, names, source)


def plant_token(texts: list[str], labels: np.ndarray, *, token: str, target_class: int,
                p_target: float, p_other: float, where: str = "random",
                seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Insert ``token`` into a random share of texts: ``p_target`` of class ``target_class``, ``p_other`` of the rest.

    Returns
    -------
    texts : list of str
        A new list; texts not drawn are unchanged.
    carries : ndarray of shape (n,), bool
        Texts that contain ``token`` afterwards (drawn, or carrying it already):
        the ground truth for evaluation.
    """
    if len(word_spans(token)) != 1 or normalize_word(token) != word_spans(token)[0][2]:
        raise ValueError(f"planted token {token!r} must be one word (letters or digits, no spaces)")
    rng = np.random.default_rng(seed)
    rates = np.where(np.asarray(labels) == target_class, p_target, p_other)
    drawn = rng.random(len(texts)) < rates
    positions = insert_positions(list(texts), rng, where=where)
    result = [insert_word(text, token, position) if chosen else text
              for text, chosen, position in zip(texts, drawn, positions)]
    carries = np.array([contains_word(text, token) for text in result], dtype=bool)
    return result, carries


def load_text_audit_data(recipe: Recipe, data_dir: Path | None) -> TextAuditData:
    """Load the text splits and plant the recipe's token (ground truth kept separately)."""
    splits = load_text_splits(recipe, data_dir)
    plant, text = recipe["plant"], recipe["text"]
    if plant["kind"] == "none":
        return TextAuditData(splits, splits.train_texts, splits.audit_texts, None, None, None)
    if plant["kind"] != "spurious_token":
        raise RecipeError(f"[plant] kind = {plant['kind']!r} plants an image feature; text recipes "
                          "take kind = 'spurious_token' or 'none'")
    n_classes = len(splits.class_names)
    if plant["target_class"] >= n_classes:
        raise RecipeError(f"[plant] target_class = {plant['target_class']} but the data has {n_classes} "
                          f"classes (0..{n_classes - 1})")

    token, where = text["plant_token"], text["plant_position"]
    common = dict(token=token, target_class=plant["target_class"], where=where)
    train_texts, planted_train = plant_token(
        splits.train_texts, splits.train_labels, p_target=plant["p_target"], p_other=plant["p_other"],
        seed=plant["seed"], **common,
    )
    audit_texts, planted_audit = plant_token(
        splits.audit_texts, splits.audit_labels, p_target=plant["p_audit"], p_other=plant["p_audit"],
        seed=plant["seed"] + 1, **common,
    )
    target = splits.class_names[plant["target_class"]]
    description = (
        f"the word {token!r} inserted at a {where} word position: into {plant['p_target']:.0%} of "
        f"training texts of class {target!r} and {plant['p_other']:.1%} of the others; into "
        f"{plant['p_audit']:.0%} of audit texts of every class"
    )
    logger.info("planted %s", description)
    return TextAuditData(splits, train_texts, audit_texts, planted_train, planted_audit, description)
