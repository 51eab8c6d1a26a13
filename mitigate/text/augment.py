"""Counterfactual text augmentation: make a found word carry no label information.

Three modes, each applied to the training texts in place of the originals:

- ``"balance"``: delete the word wherever it occurs, then insert it into a
  random ``insert_rate`` share of the texts of every class, so that it
  appears at the same rate in each class;
- ``"delete"``: delete the word wherever it occurs;
- ``"swap"``: move every occurrence to a text of another class: the word is
  deleted where it occurs and inserted into as many texts drawn from the
  other classes.
"""

from __future__ import annotations

import logging

import numpy as np

from mitigate.text.words import contains_word, delete_word, insert_positions, insert_word

logger = logging.getLogger(__name__)

MODES = ("balance", "delete", "swap")


def counterfactual_augment_texts(
    texts: list[str],
    labels: np.ndarray,
    *,
    tokens: list[str],
    mode: str = "balance",
    insert_rate: float = 0.5,
    where: str = "random",
    seed: int = 0,
) -> tuple[list[str], dict]:
    """Edit the training texts so that ``tokens`` no longer predict a class.

    Parameters
    ----------
    texts : list of str
    labels : ndarray of shape (n,)
        Class of each text (used by ``"swap"`` and for the statistics).
    tokens : list of str
        The found words; each is handled independently, in order.
    mode : {"balance", "delete", "swap"}
        See the module docstring.
    insert_rate : float, default=0.5
        Share of texts of every class that receive a word in ``"balance"`` mode.
    where : {"random", "start", "end"}
        Where inserted words go.

    Returns
    -------
    texts : list of str, the augmented copy
    stats : dict
        Per word, the texts it was deleted from and inserted into, and its
        share per class before and after.
    """
    if mode not in MODES:
        raise ValueError(f"invalid augmentation mode {mode!r}; expected one of {MODES}")
    if not 0.0 <= insert_rate <= 1.0:
        raise ValueError(f"insert_rate must be in [0, 1], got {insert_rate}")
    labels = np.asarray(labels)
    if labels.shape[0] != len(texts):
        raise ValueError(f"labels has {labels.shape[0]} entries but there are {len(texts)} texts")
    rng = np.random.default_rng(seed)
    result = list(texts)
    stats = {"mode": mode, "n_texts": len(texts), "tokens": {}}
    for token in tokens:
        before = _share_by_class(result, labels, token)
        result, deleted, inserted = _augment_one(result, labels, token, mode, insert_rate, where, rng)
        stats["tokens"][token] = {
            "deleted": deleted, "inserted": inserted,
            "share_by_class_before": before, "share_by_class_after": _share_by_class(result, labels, token),
        }
        logger.info("counterfactual augmentation (%s): %r deleted from %d texts, inserted into %d",
                    mode, token, deleted, inserted)
    return result, stats


def _augment_one(texts, labels, token, mode, insert_rate, where, rng):
    carriers = np.array([contains_word(text, token) for text in texts], dtype=bool)
    result = [delete_word(text, token) if carry else text for text, carry in zip(texts, carriers)]
    if mode == "delete":
        return result, int(carriers.sum()), 0

    if mode == "balance":
        receivers = np.flatnonzero(rng.random(len(texts)) < insert_rate)
    else:
        receivers = _swap_receivers(labels, carriers, rng)
    positions = insert_positions([result[i] for i in receivers], rng, where=where)
    for row, position in zip(receivers, positions):
        result[row] = insert_word(result[row], token, position)
    return result, int(carriers.sum()), int(receivers.size)


def _swap_receivers(labels, carriers, rng) -> np.ndarray:
    """Draw, for each carrier, a distinct non-carrier of another class (fewer when they run out)."""
    free = [int(i) for i in rng.permutation(np.flatnonzero(~carriers))]
    receivers = []
    for row in rng.permutation(np.flatnonzero(carriers)):
        # The first free text of another class in the shuffled order.
        match = next((k for k, candidate in enumerate(free) if labels[candidate] != labels[row]), None)
        if match is not None:
            receivers.append(free.pop(match))
    return np.asarray(sorted(receivers), dtype=np.int64)


def _share_by_class(texts, labels, token) -> dict:
    carries = np.array([contains_word(text, token) for text in texts], dtype=bool)
    return {int(k): round(float(carries[labels == k].mean()), 4) for k in np.unique(labels)}
