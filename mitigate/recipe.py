"""Retraining recipes: TOML files validated against one declared schema.

Every section and key a recipe may contain is declared in ``SCHEMA`` with its
type and default. An unknown key, a value of the wrong type or a missing
required key raises :class:`RecipeError` naming the key, the value, what is
allowed and the line in the file.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from mitigate.constants import DEFAULT_ACCURACY_GAP, DEFAULT_CONCENTRATION_THRESHOLD, DEFAULT_ENTROPY_THRESHOLD

REQUIRED = object()


@dataclass(frozen=True)
class Key:
    """One recipe key: its type(s), default and allowed values."""

    types: tuple
    default: object = None
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    help: str = ""


def _k(types, default=None, **kwargs) -> Key:
    return Key(types if isinstance(types, tuple) else (types,), default, **kwargs)


NUMBER = (int, float)

SCHEMA: dict[str, dict[str, Key]] = {
    "recipe": {
        "name": _k(str, REQUIRED, help="short name shown in the report"),
        "description": _k(str, ""),
    },
    "data": {
        "modality": _k(str, "image", choices=("image", "text"),
                       help="'text' runs the text path (mitigate.text.run) and needs a [text] section"),
        "dataset": _k(str, "fashion_mnist", choices=("fashion_mnist", "digits", "wordnet", "from_disk"),
                      help="image: fashion_mnist, digits; text: wordnet (noun glosses) or from_disk "
                           "(a folder written by datasets' save_to_disk, given in dir)"),
        "dir": _k(str, None, help="folder with the IDX files; default /usr/share/datasets/fashion-mnist"),
        "fallback": _k(bool, True, help="use scikit-learn's digits when the files are missing"),
        "train_limit": _k(int, 0, minimum=0, help="use only this many training images (0: all)"),
        "audit_limit": _k(int, 0, minimum=0, help="use only this many audit images (0: all)"),
    },
    "plant": {
        "kind": _k(str, "none", choices=("none", "spurious_square", "spurious_token", "representational_collapse",
                                         "gradient_starvation", "data_artifact"),
                   help="spurious_token (text) inserts [text] plant_token; representational_collapse, "
                        "gradient_starvation and data_artifact plant the benchmark of that name from "
                        "mitigate.plants, set by [plant] seed and [plant.options]"),
        "target_class": _k(int, 0, minimum=0),
        "size": _k(int, 4, minimum=1, help="side of the square, in pixels at 28x28 (scaled for other sizes)"),
        "corner": _k(str, "top_right", choices=("top_left", "top_right", "bottom_left", "bottom_right")),
        "intensity": _k(NUMBER, 1.0, minimum=0.0, maximum=1.0),
        "p_target": _k(NUMBER, 0.99, minimum=0.0, maximum=1.0),
        "p_other": _k(NUMBER, 0.002, minimum=0.0, maximum=1.0),
        "p_audit": _k(NUMBER, 0.5, minimum=0.0, maximum=1.0),
        "seed": _k(int, 1),
        "options": _k(dict, None, help="mitigate.plants kinds only: overrides of that mechanism's "
                                       "entries in mitigate.plants.DEFAULTS"),
    },
    "model": {
        "factory": _k(str, "builtin:small_cnn", help="'builtin:small_cnn' or 'package.module:callable'"),
        "layer": _k(str, "penultimate", help="name of the layer whose output is the embedding"),
        "pooling": _k(str, "mean", choices=("mean", "first", "flatten")),
        "kwargs": _k(dict, None, help="keyword arguments for the factory"),
    },
    "train": {
        "epochs": _k(int, 2, minimum=1),
        "batch_size": _k(int, 128, minimum=1),
        "lr": _k(NUMBER, 1e-3, minimum=0.0),
        "seed": _k(int, 0),
        "mixed_precision": _k(str, "no", choices=("no", "bf16", "fp16")),
        "require_precision": _k(bool, False),
        "checkpoint_every": _k(int, 0, minimum=0),
        "log_with": _k(str, "none", choices=("none", "tensorboard")),
    },
    "detect": {
        "n_neighbors": _k(int, 15, minimum=2),
        "min_dist": _k(NUMBER, 0.0, minimum=0.0, maximum=1.0),
        "metric": _k(str, "euclidean", choices=("euclidean", "cosine")),
        "pca_dims": _k(int, 50, minimum=0, help="0 skips PCA"),
        "min_cluster_size": _k(int, 0, minimum=0, help="0 picks max(15, n // 50)"),
        "acs_threshold": _k(NUMBER, 0.0, minimum=0.0, help="0 picks the default for the ACS reference"),
        "entropy_threshold": _k(NUMBER, DEFAULT_ENTROPY_THRESHOLD, minimum=0.0, maximum=1.0),
        "concentration_threshold": _k(NUMBER, DEFAULT_CONCENTRATION_THRESHOLD, minimum=0.0, maximum=1.0),
        "accuracy_gap": _k(NUMBER, DEFAULT_ACCURACY_GAP, minimum=0.0, maximum=1.0),
        "seed": _k(int, 0),
    },
    "probe": {
        "max_members": _k(int, 200, minimum=10),
        "cell": _k(int, 0, minimum=0, help="occlusion cell side in pixels (0: image side / 7)"),
        "fill": _k(NUMBER, 0.0, help="pixel value written into occluded cells"),
        "max_attractors": _k(int, 3, minimum=1, help="probe at most this many attractors"),
    },
    "remedy": {
        "method": _k(str, "auto", choices=("auto", "counterfactual_augmentation", "uniformity_loss",
                                           "vicreg_terms", "spectral_decoupling", "collapse_penalty",
                                           "wider_bottleneck", "artifact_stripping"),
                     help="'auto' picks by root cause (docs/remedies.md)"),
        "paste_rate": _k(NUMBER, 0.5, minimum=0.0, maximum=1.0,
                         help="counterfactual augmentation: share of training images given the feature"),
        "augmentation": _k(str, "auto", choices=("auto", "paste", "swap"),
                           help="counterfactual augmentation: 'paste' the located feature, 'swap' the "
                                "region between images, or 'auto' (swap for gradient starvation)"),
        "weight": _k(NUMBER, 0.1, minimum=0.0, help="loss remedies: weight of the added loss"),
        "warmup_steps": _k(int, 0, minimum=0, help="spectral decoupling: steps before it applies"),
        "widen_to": _k(int, 0, minimum=0,
                       help="wider bottleneck: new width of the embedding layer (0: four times wider)"),
        "widen_init": _k(str, "fresh", choices=("fresh", "copy"),
                         help="wider bottleneck: new units freshly initialised with zero outgoing "
                              "weights, or copies of existing units (Net2Net)"),
        "epochs": _k(int, 0, minimum=0, help="retraining epochs after the remedy (0: [train] epochs)"),
        "seed": _k(int, 0),
    },
    "verify": {
        "min_worst_group_gain": _k(NUMBER, 0.2, minimum=0.0, maximum=1.0,
                                   help="worst-group accuracy must rise by at least this much"),
        "max_accuracy_drop": _k(NUMBER, 0.01, minimum=0.0, maximum=1.0,
                                help="overall accuracy may fall by at most this much"),
    },
    # Used only when [data] modality = "text"; see mitigate/text/run.py.
    "text": {
        "text_column": _k(str, "text", help="column of the data set holding the texts"),
        "label_column": _k(str, "label", help="column holding the labels (ClassLabel, str or int)"),
        "categories": _k(list, ["noun.animal", "noun.artifact", "noun.food", "noun.person", "noun.plant"],
                         help="wordnet: lexicographer categories used as classes, in label order"),
        "gloss_examples": _k(bool, False, help="wordnet: keep the quoted example sentences of glosses"),
        "train_split": _k(str, "train", help="from_disk with a DatasetDict: the training split"),
        "audit_split": _k(str, "test", help="from_disk with a DatasetDict: the audit split"),
        "audit_share": _k(NUMBER, 0.3, minimum=0.0, maximum=0.9,
                          help="single data set: share of each class held out for the audit"),
        "train_per_class": _k(int, 0, minimum=0, help="at most this many training texts per class (0: all)"),
        "audit_per_class": _k(int, 0, minimum=0,
                              help="audit texts per class (0: audit_share of the class)"),
        "split_seed": _k(int, 0),
        "max_length": _k(int, 48, minimum=8, maximum=512, help="tokens per text, longer texts are cut"),
        "head_pooling": _k(str, "mean", choices=("mean", "first"),
                           help="pooling of the last hidden state for the classification head"),
        "tokenizer": _k(str, "", help="tokenizer folder ('': the model's own, or the packaged MiniLM one)"),
        "batch_size": _k(int, 128, minimum=1, help="texts per batch during extraction and probes"),
        "plant_token": _k(str, "reportedly", help="the word planted by [plant] kind = 'spurious_token'"),
        "plant_position": _k(str, "random", choices=("random", "start", "end"),
                             help="where planted and probe words are inserted"),
        "top_tokens": _k(int, 3, minimum=1, help="attributed words tested with template probes"),
        "control_token": _k(str, "", help="word inserted in control probes ('': 'also' or the next neutral word)"),
        "augment_mode": _k(str, "balance", choices=("balance", "delete", "swap"),
                           help="counterfactual text augmentation, see mitigate/text/augment.py"),
    },
}


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the key, value, line and fix."""


@dataclass
class Recipe:
    """A validated recipe: ``settings[section][key]`` with every default filled in."""

    settings: dict
    path: Path | None
    text: str

    def __getitem__(self, section: str) -> dict:
        return self.settings[section]

    @property
    def name(self) -> str:
        return self.settings["recipe"]["name"]

    def fingerprint(self) -> str:
        """Return a short hash of the settings, to tell runs of different recipes apart."""
        payload = json.dumps(self.settings, sort_keys=True, default=str).encode()
        return hashlib.sha256(payload).hexdigest()[:16]


def load_recipe(path: Path | str) -> Recipe:
    """Read and validate a recipe file."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}; pass the path of a .toml recipe, "
                          "for example recipes/fashion_patch.toml")
    text = path.read_text(encoding="utf-8")
    return parse_recipe(text, path=path)


def parse_recipe(text: str, *, path: Path | None = None, overrides: dict | None = None) -> Recipe:
    """Validate recipe TOML text and fill in defaults.

    Parameters
    ----------
    overrides : dict, optional
        ``{section: {key: value}}`` applied after parsing (for tests and the
        reduced CI variants), validated like file values.
    """
    where = str(path) if path else "<recipe>"
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise RecipeError(f"{where}: invalid TOML: {err}") from err
    for section, values in (overrides or {}).items():
        raw.setdefault(section, {}).update(values)

    settings = {}
    for section, values in raw.items():
        if section not in SCHEMA:
            raise RecipeError(
                f"{where}:{_line_of(text, section, None)}: unknown section [{section}]; "
                f"allowed sections: {', '.join(SCHEMA)}"
            )
        if not isinstance(values, dict):
            raise RecipeError(f"{where}: [{section}] must be a table, got {type(values).__name__}")
    for section, keys in SCHEMA.items():
        values = raw.get(section, {})
        settings[section] = {}
        for key, value in values.items():
            if key not in keys:
                raise RecipeError(
                    f"{where}:{_line_of(text, section, key)}: unknown key {key!r} in [{section}]; "
                    f"allowed keys: {', '.join(keys)}"
                )
            settings[section][key] = _check_value(where, text, section, key, value, keys[key])
        for key, spec in keys.items():
            if key in settings[section]:
                continue
            if spec.default is REQUIRED:
                raise RecipeError(f"{where}: missing required key {key!r} in [{section}]")
            settings[section][key] = spec.default
    return Recipe(settings=settings, path=path, text=text)


def _check_value(where, text, section, key, value, spec: Key):
    line = _line_of(text, section, key)
    expected = " or ".join(t.__name__ for t in spec.types)
    # bool is a subclass of int in Python; a TOML true is not a number here.
    wrong_bool = isinstance(value, bool) and bool not in spec.types
    if wrong_bool or not isinstance(value, spec.types):
        raise RecipeError(
            f"{where}:{line}: [{section}] {key} = {value!r} has type {type(value).__name__}; "
            f"expected {expected}" + (f" ({spec.help})" if spec.help else "")
        )
    if spec.choices is not None and value not in spec.choices:
        raise RecipeError(
            f"{where}:{line}: [{section}] {key} = {value!r} is not allowed; "
            f"expected one of {', '.join(map(repr, spec.choices))}"
        )
    if spec.minimum is not None and not isinstance(value, (str, dict)) and value < spec.minimum:
        raise RecipeError(f"{where}:{line}: [{section}] {key} = {value!r} is below the minimum {spec.minimum}")
    if spec.maximum is not None and not isinstance(value, (str, dict)) and value > spec.maximum:
        raise RecipeError(f"{where}:{line}: [{section}] {key} = {value!r} is above the maximum {spec.maximum}")
    return value


def _line_of(text: str, section: str, key: str | None):
    """Return the 1-based line of ``key`` inside ``[section]`` (or of the header), or '?'."""
    current = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        header = re.match(r"^\[\s*([^\]]+?)\s*\]", stripped)
        if header:
            current = header.group(1)
            if key is None and current == section:
                return number
            continue
        if key is not None and current == section and re.match(rf"^{re.escape(key)}\s*=", stripped):
            return number
    return "?"
