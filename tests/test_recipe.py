from pathlib import Path

import pytest

from mitigate.recipe import RecipeError, load_recipe, parse_recipe

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_recipes_are_valid():
    for path in sorted((ROOT / "recipes").glob("*.toml")):
        recipe = load_recipe(path)
        assert recipe.name


def test_defaults_filled_in():
    recipe = parse_recipe('[recipe]\nname = "x"\n')
    assert recipe["train"]["epochs"] == 2
    assert recipe["detect"]["metric"] == "euclidean"


def test_unknown_key_names_key_line_and_allowed():
    text = '[recipe]\nname = "x"\n\n[train]\nepochs = 1\nepoch = 3\n'
    with pytest.raises(RecipeError, match=r":6: unknown key 'epoch' in \[train\]; allowed keys: epochs"):
        parse_recipe(text)


def test_unknown_section_named():
    with pytest.raises(RecipeError, match=r":3: unknown section \[trian\]"):
        parse_recipe('[recipe]\nname = "x"\n[trian]\nepochs = 1\n')


def test_wrong_type_names_value_and_expected():
    with pytest.raises(RecipeError, match=r":4: \[train\] epochs = 'two' has type str; expected int"):
        parse_recipe('[recipe]\nname = "x"\n[train]\nepochs = "two"\n')


def test_bool_is_not_a_number():
    with pytest.raises(RecipeError, match="lr = True has type bool; expected int or float"):
        parse_recipe('[recipe]\nname = "x"\n[train]\nlr = true\n')


def test_choice_and_range_checked():
    with pytest.raises(RecipeError, match="mixed_precision = 'fp8' is not allowed; expected one of"):
        parse_recipe('[recipe]\nname = "x"\n[train]\nmixed_precision = "fp8"\n')
    with pytest.raises(RecipeError, match="p_target = 1.5 is above the maximum 1.0"):
        parse_recipe('[recipe]\nname = "x"\n[plant]\np_target = 1.5\n')


def test_missing_required_key():
    with pytest.raises(RecipeError, match=r"missing required key 'name' in \[recipe\]"):
        parse_recipe("[train]\nepochs = 1\n")


def test_invalid_toml_reported():
    with pytest.raises(RecipeError, match="invalid TOML"):
        parse_recipe("[recipe\nname = 1")


def test_missing_file_says_what_to_pass(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.toml")


def test_overrides_validated():
    recipe = parse_recipe('[recipe]\nname = "x"\n', overrides={"train": {"epochs": 1}})
    assert recipe["train"]["epochs"] == 1
    with pytest.raises(RecipeError, match="unknown key 'epochz'"):
        parse_recipe('[recipe]\nname = "x"\n', overrides={"train": {"epochz": 1}})


def test_fingerprint_changes_with_settings():
    a = parse_recipe('[recipe]\nname = "x"\n')
    b = parse_recipe('[recipe]\nname = "x"\n[train]\nepochs = 3\n')
    assert a.fingerprint() != b.fingerprint()
