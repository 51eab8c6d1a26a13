"""Word-level edits behind planting, probes and augmentation."""

import numpy as np
import pytest

from mitigate.text.words import (
    contains_word,
    delete_word,
    insert_positions,
    insert_word,
    word_set,
    word_spans,
)


def test_word_spans_keep_hyphens_and_apostrophes():
    assert [w for _, _, w in word_spans("A sea-lion's fin, o'clock.")] == ["a", "sea-lion's", "fin", "o'clock"]


def test_contains_word_matches_whole_words_only():
    assert contains_word("Reportedly a dog", "reportedly")
    assert not contains_word("reportedlyx a dog", "reportedly")
    assert not contains_word("a doghouse", "dog")


def test_delete_word_every_occurrence_without_double_spaces():
    assert delete_word("dog eats dog food", "dog") == "eats food"
    assert delete_word("a dog, a cat", "dog") == "a, a cat"
    assert delete_word("a cat", "dog") == "a cat"


def test_insert_word_positions():
    assert insert_word("a large dog", "very", 1) == "a very large dog"
    assert insert_word("a large dog", "very", 0) == "very a large dog"
    assert insert_word("a large dog.", "indeed", 3) == "a large dog. indeed"
    assert insert_word("", "alone", 0) == "alone"


def test_insert_then_delete_restores_text():
    text = "a seat for one person, with a support for the back"
    for position in range(len(word_spans(text)) + 1):
        assert delete_word(insert_word(text, "reportedly", position), "reportedly") == text


def test_insert_word_rejects_negative_position():
    with pytest.raises(ValueError, match="position must be 0 or more, got -1"):
        insert_word("a dog", "x", -1)


def test_insert_positions_modes():
    rng = np.random.default_rng(0)
    texts = ["one two three", "one"]
    assert insert_positions(texts, rng, where="start") == [0, 0]
    assert insert_positions(texts, rng, where="end") == [3, 1]
    drawn = insert_positions(texts * 200, rng, where="random")
    assert set(drawn[0::2]) == {0, 1, 2, 3}
    assert set(drawn[1::2]) == {0, 1}
    with pytest.raises(ValueError, match="invalid insertion position 'middle'"):
        insert_positions(texts, rng, where="middle")


def test_word_set_is_lower_case():
    assert word_set("The dog and THE cat") == {"the", "dog", "and", "cat"}
