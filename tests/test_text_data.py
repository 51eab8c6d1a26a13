"""Text data sets: column handling, per-class splits, planting and recipe errors."""

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from mitigate.recipe import RecipeError, parse_recipe
from mitigate.text.data import (
    dataset_to_arrays,
    load_text_audit_data,
    load_text_splits,
    plant_token,
    split_per_class,
)
from mitigate.text.words import contains_word

RECIPE = """
[recipe]
name = "t"
[data]
modality = "text"
dataset = "from_disk"
[model]
factory = "builtin:tiny_bert"
layer = "transformer"
"""


def toy_dataset(n_per_class=20, label_kind="classlabel"):
    texts = [f"gloss {i} of kind {k}" for k in range(3) for i in range(n_per_class)]
    codes = [k for k in range(3) for _ in range(n_per_class)]
    names = ["animal", "food", "plant"]
    if label_kind == "classlabel":
        features = Features({"body": Value("string"), "topic": ClassLabel(names=names)})
        return Dataset.from_dict({"body": texts, "topic": codes}, features=features)
    if label_kind == "str":
        return Dataset.from_dict({"body": texts, "topic": [names[k] for k in codes]})
    return Dataset.from_dict({"body": texts, "topic": [10 * k for k in codes]})


@pytest.mark.parametrize("kind, names", [
    ("classlabel", ("animal", "food", "plant")),
    ("str", ("animal", "food", "plant")),
    ("int", ("0", "10", "20")),
])
def test_dataset_to_arrays_label_kinds(kind, names):
    texts, codes, found = dataset_to_arrays(toy_dataset(label_kind=kind), text_column="body", label_column="topic")
    assert found == names
    assert codes.tolist() == [k for k in range(3) for _ in range(20)]
    assert texts[0] == "gloss 0 of kind 0"


def test_dataset_to_arrays_missing_column():
    with pytest.raises(ValueError, match=r"\[text\] text_column = 'text' is not a column.*'body'"):
        dataset_to_arrays(toy_dataset())


def test_dataset_to_arrays_rejects_non_strings():
    dataset = Dataset.from_dict({"text": ["a", None], "label": [0, 1]})
    with pytest.raises(ValueError, match=r"must hold strings; rows \[1\]"):
        dataset_to_arrays(dataset)


def test_split_per_class_is_disjoint_and_sized():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    train, audit = split_per_class(labels, audit_share=0.3, train_per_class=10, audit_per_class=0, seed=0)
    assert not set(train) & set(audit)
    assert np.bincount(labels[audit]).tolist() == [15, 9, 6]
    assert np.bincount(labels[train]).tolist() == [10, 10, 10]


def test_split_per_class_warns_when_class_too_small():
    labels = np.repeat([0, 1], [50, 4])
    with pytest.warns(UserWarning, match="class 1 has 4 rows"):
        _, audit = split_per_class(labels, audit_share=0.3, train_per_class=0, audit_per_class=5, seed=0)
    assert np.bincount(labels[audit]).tolist() == [5, 2]


def test_plant_token_rates_and_ground_truth():
    labels = np.repeat([0, 1, 2], 1000)
    texts = ["a plain gloss about things"] * labels.size
    planted, carries = plant_token(texts, labels, token="reportedly", target_class=1, p_target=0.95,
                                   p_other=0.01, seed=0)
    rates = [carries[labels == k].mean() for k in range(3)]
    assert 0.93 < rates[1] < 0.97
    assert rates[0] < 0.02
    assert rates[2] < 0.02
    assert carries.tolist() == [contains_word(t, "reportedly") for t in planted]
    assert texts[0] == "a plain gloss about things"


def test_plant_token_counts_natural_occurrences():
    _, carries = plant_token(["reportedly so", "not so"], np.array([0, 0]), token="reportedly",
                             target_class=1, p_target=1.0, p_other=0.0)
    assert carries.tolist() == [True, False]


def test_plant_token_must_be_one_word():
    with pytest.raises(ValueError, match="must be one word"):
        plant_token(["a"], np.array([0]), token="two words", target_class=0, p_target=1.0, p_other=0.0)


def test_from_disk_single_dataset_is_split(tmp_path):
    toy_dataset().save_to_disk(str(tmp_path / "ds"))
    recipe = parse_recipe(RECIPE, overrides={
        "data": {"dir": str(tmp_path / "ds")},
        "text": {"text_column": "body", "label_column": "topic", "audit_per_class": 5},
    })
    splits = load_text_splits(recipe, None)
    assert splits.class_names == ("animal", "food", "plant")
    assert len(splits.audit_texts) == 15
    assert len(splits.train_texts) == 45
    assert not set(splits.audit_texts) & set(splits.train_texts)


def test_from_disk_dataset_dict_keeps_splits(tmp_path):
    DatasetDict({"fit": toy_dataset(10), "holdout": toy_dataset(4)}).save_to_disk(str(tmp_path / "dd"))
    recipe = parse_recipe(RECIPE, overrides={"text": {"text_column": "body", "label_column": "topic",
                                                      "train_split": "fit", "audit_split": "holdout"}})
    splits = load_text_splits(recipe, tmp_path / "dd")
    assert len(splits.train_texts) == 30
    assert len(splits.audit_texts) == 12


def test_from_disk_wrong_split_name(tmp_path):
    DatasetDict({"fit": toy_dataset(4)}).save_to_disk(str(tmp_path / "dd"))
    recipe = parse_recipe(RECIPE, overrides={"text": {"text_column": "body", "label_column": "topic"}})
    with pytest.raises(RecipeError, match=r"split name\(s\) \['train', 'test'\] not in the saved DatasetDict"):
        load_text_splits(recipe, tmp_path / "dd")


def test_from_disk_needs_folder():
    with pytest.raises(RecipeError, match="needs \\[data\\] dir"):
        load_text_splits(parse_recipe(RECIPE), None)


def test_planted_audit_is_independent_of_class(tmp_path):
    toy_dataset(200).save_to_disk(str(tmp_path / "ds"))
    recipe = parse_recipe(RECIPE, overrides={
        "data": {"dir": str(tmp_path / "ds")},
        "text": {"text_column": "body", "label_column": "topic"},
        "plant": {"kind": "spurious_token", "target_class": 1, "p_target": 0.95, "p_other": 0.0, "p_audit": 0.5},
    })
    data = load_text_audit_data(recipe, None)
    train_rates = [data.planted_train[data.splits.train_labels == k].mean() for k in range(3)]
    audit_rates = [data.planted_audit[data.splits.audit_labels == k].mean() for k in range(3)]
    assert train_rates[0] == 0.0
    assert train_rates[2] == 0.0
    assert train_rates[1] > 0.9
    assert all(0.3 < rate < 0.7 for rate in audit_rates)
    assert "'reportedly'" in data.plant_description


def test_text_recipe_rejects_image_plant(tmp_path):
    toy_dataset().save_to_disk(str(tmp_path / "ds"))
    recipe = parse_recipe(RECIPE, overrides={
        "data": {"dir": str(tmp_path / "ds")}, "text": {"text_column": "body", "label_column": "topic"},
        "plant": {"kind": "spurious_square"},
    })
    with pytest.raises(RecipeError, match="kind = 'spurious_square' plants an image feature"):
        load_text_audit_data(recipe, None)
