"""Counterfactual text augmentation."""

import numpy as np
import pytest

from mitigate.text.augment import counterfactual_augment_texts
from mitigate.text.words import contains_word, delete_word


def corpus(n_per_class=200):
    """Three classes; class 0 carries 'reportedly' in 95% of texts, the others in none."""
    texts, labels = [], []
    for label in range(3):
        for i in range(n_per_class):
            text = f"text {i} of class {label} about things"
            if label == 0 and i % 20:
                text = "reportedly " + text
            texts.append(text)
            labels.append(label)
    return texts, np.asarray(labels)


def shares(texts, labels, word):
    carries = np.array([contains_word(t, word) for t in texts])
    return [carries[labels == k].mean() for k in range(3)]


def test_balance_spreads_word_over_classes():
    texts, labels = corpus()
    augmented, stats = counterfactual_augment_texts(texts, labels, tokens=["reportedly"], mode="balance",
                                                    insert_rate=0.5, seed=0)
    after = shares(augmented, labels, "reportedly")
    assert all(0.4 < share < 0.6 for share in after)
    assert stats["tokens"]["reportedly"]["deleted"] == 190
    assert stats["tokens"]["reportedly"]["share_by_class_before"][0] == 0.95
    assert texts[1].startswith("reportedly")


def test_balance_keeps_content_words():
    texts, labels = corpus()
    augmented, _ = counterfactual_augment_texts(texts, labels, tokens=["reportedly"], seed=0)
    for original, new in zip(texts, augmented):
        assert delete_word(new, "reportedly") == delete_word(original, "reportedly")


def test_delete_removes_every_occurrence():
    texts, labels = corpus()
    augmented, stats = counterfactual_augment_texts(texts, labels, tokens=["reportedly"], mode="delete")
    assert shares(augmented, labels, "reportedly") == [0.0, 0.0, 0.0]
    assert stats["tokens"]["reportedly"]["inserted"] == 0


def test_swap_moves_word_to_other_classes():
    texts, labels = corpus()
    augmented, stats = counterfactual_augment_texts(texts, labels, tokens=["reportedly"], mode="swap", seed=3)
    after = shares(augmented, labels, "reportedly")
    assert after[0] == 0.0
    assert sum(after[k] * 200 for k in (1, 2)) == 190
    assert stats["tokens"]["reportedly"]["inserted"] == 190


def test_augment_is_seeded():
    texts, labels = corpus()
    first, _ = counterfactual_augment_texts(texts, labels, tokens=["reportedly"], seed=7)
    second, _ = counterfactual_augment_texts(texts, labels, tokens=["reportedly"], seed=7)
    assert first == second


def test_augment_rejects_bad_arguments():
    texts, labels = corpus(5)
    with pytest.raises(ValueError, match="invalid augmentation mode 'shuffle'"):
        counterfactual_augment_texts(texts, labels, tokens=["x"], mode="shuffle")
    with pytest.raises(ValueError, match="insert_rate must be in \\[0, 1\\], got 1.5"):
        counterfactual_augment_texts(texts, labels, tokens=["x"], insert_rate=1.5)
    with pytest.raises(ValueError, match="labels has 3 entries but there are 15 texts"):
        counterfactual_augment_texts(texts, labels[:3], tokens=["x"])
