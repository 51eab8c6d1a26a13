"""Word-level edits of texts: find, delete and insert whole words.

Probes, planting and augmentation edit words rather than the model's
subword tokens, so that a found token can be inserted into or deleted from
any text and reported as a readable word. A word is a run of letters or
digits, optionally joined by hyphens or apostrophes ("sea-lion", "o'clock");
matching ignores case.
"""

from __future__ import annotations

import re

import numpy as np

WORD_PATTERN = re.compile(r"\w+(?:[-']\w+)*")


def normalize_word(word: str) -> str:
    """Return the form used to compare words: lower case, no surrounding space."""
    return str(word).strip().lower()


def word_spans(text: str) -> list[tuple[int, int, str]]:
    """Return ``(start, end, normalized word)`` for every word of ``text``, in order."""
    return [(m.start(), m.end(), m.group(0).lower()) for m in WORD_PATTERN.finditer(text)]


def word_set(text: str) -> set[str]:
    """Return the distinct normalized words of ``text``."""
    return {word for _, _, word in word_spans(text)}


def contains_word(text: str, word: str) -> bool:
    """Return True when ``text`` contains ``word`` as a whole word."""
    return normalize_word(word) in word_set(text)


def delete_word(text: str, word: str) -> str:
    """Return ``text`` with every whole-word occurrence of ``word`` removed.

    The space before a removed word is removed with it, and a removed first
    word takes the space after it, so no double spaces remain.
    """
    target = normalize_word(word)
    pieces, position = [], 0
    for start, end, found in word_spans(text):
        if found != target:
            continue
        cut_start, cut_end = start, end
        if cut_start > 0 and text[cut_start - 1] == " ":
            cut_start -= 1
        elif cut_end < len(text) and text[cut_end] == " ":
            cut_end += 1
        pieces.append(text[position:cut_start])
        position = cut_end
    pieces.append(text[position:])
    return "".join(pieces)


def insert_word(text: str, word: str, position: int) -> str:
    """Return ``text`` with ``word`` inserted before its ``position``-th word.

    ``position`` counts words from 0; a value at or past the number of words
    appends ``word`` at the end.
    """
    spans = word_spans(text)
    if position < 0:
        raise ValueError(f"position must be 0 or more, got {position}")
    if position >= len(spans):
        return f"{text.rstrip()} {word}" if text.strip() else word
    start = spans[position][0]
    return f"{text[:start]}{word} {text[start:]}"


def insert_positions(texts: list[str], rng: np.random.Generator, *, where: str = "random") -> list[int]:
    """Draw one insertion position per text: ``"start"``, ``"end"`` or uniform ``"random"``."""
    if where not in ("random", "start", "end"):
        raise ValueError(f"invalid insertion position {where!r}; expected 'random', 'start' or 'end'")
    counts = [len(word_spans(text)) for text in texts]
    if where == "start":
        return [0] * len(texts)
    if where == "end":
        return counts
    return [int(rng.integers(0, count + 1)) for count in counts]
