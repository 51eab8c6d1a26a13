"""Text probes: find the words that pull inputs into a cluster, then test them.

Attribution is leave-one-word-out. For every probed member and every
distinct word in it, the word is deleted (all its occurrences). The
increase of the member's distance to the cluster centroid, relative to the
mean distance before, is credited to the word. A word's score is the sum of
its credits over the probed members divided by their number. A word that
is in every member and moves each one far therefore ranks first, and a
content word that matters to one member only ranks low.

Template probes then test the top words causally, on real texts:

- keep the rest, remove the word: delete it from members; the *exit rate*
  is the share of probed members the detector no longer assigns to the
  cluster;
- keep the word, vary the rest: insert it into non-members (of the classes
  that make up at least 5% of the members); the *entry rate* is the share
  now assigned to the cluster;
- control: insert a neutral control word at the same positions; the
  *control entry rate* should stay low if the word itself matters.

The thresholds are the image probes' (``mitigate.probes``): exit >= 0.5,
entry >= 0.25, control < 0.2.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from mitigate.constants import NOISE_LABEL
from mitigate.probes import EXIT_RATE, is_causal
from mitigate.text.words import contains_word, delete_word, insert_positions, insert_word, word_set

logger = logging.getLogger(__name__)

# Classes that make up at least this share of the members receive the
# inserted word in entry probes.
CAPTURED_CLASS_SHARE = 0.05
# Neutral words inserted in the control probe; the first one that is not a
# candidate token is used unless the recipe names one.
CONTROL_WORDS = ("also", "often", "still", "then", "again")
# Probe sentences kept per kind for the report.
EXAMPLES_PER_KIND = 3


@dataclass
class TokenScore:
    """Leave-one-word-out attribution of one word over a cluster's probed members.

    Attributes
    ----------
    word : str
        The normalized (lower-case) word.
    score : float
        Sum of the relative distance increases over the members that contain
        the word, divided by the number of probed members; higher pulls harder.
    share : float
        Share of probed members that contain the word, in [0, 1].
    mean_effect : float
        Mean relative distance increase over the members that contain it.
    """

    word: str
    score: float
    share: float
    mean_effect: float

    def to_dict(self) -> dict:
        """Return the JSON-ready record."""
        return {"word": self.word, "score": round(float(self.score), 4),
                "share": round(float(self.share), 4), "mean_effect": round(float(self.mean_effect), 4)}


@dataclass
class TextProbeResult:
    """Evidence from token attribution and template probes on one cluster.

    Attributes
    ----------
    tokens : list of TokenScore
        The top attributed words, strongest first.
    token : str
        The word tested causally that explains membership best (see
        :func:`probe_text_cluster`).
    localization : float
        Share of the positive attribution mass on ``token``, in [0, 1].
    exit_rate, entry_rate, control_entry_rate : float
        Rates for ``token``, each in [0, 1]; see the module docstring.
    control_token : str
        The word inserted in the control probe.
    candidates : dict
        Word to its ``{exit_rate, entry_rate, control_entry_rate}``, for every
        word tested.
    feature_clusters : list of int
        Other clusters whose members leave them when ``token`` is deleted.
    examples : list of dict
        Probe sentences and where they landed: ``{kind, text, cluster, inside, prediction}``.
    """

    tokens: list
    token: str
    localization: float
    exit_rate: float
    entry_rate: float
    control_entry_rate: float
    control_token: str
    n_members_probed: int
    n_nonmembers_probed: int
    candidates: dict = field(default_factory=dict)
    feature_clusters: list = field(default_factory=list)
    feature_cluster_exit_rates: dict = field(default_factory=dict)
    examples: list = field(default_factory=list)

    @property
    def causal(self) -> bool:
        """True when removal and insertion both move inputs and the control does not."""
        return is_causal(self.exit_rate, self.entry_rate, self.control_entry_rate)

    @property
    def top_words(self) -> list:
        """The attributed words, strongest first."""
        return [score.word for score in self.tokens]

    @property
    def highlight_words(self) -> list:
        """The tested word and the attributed words scoring at least half the top score, for the report."""
        if not self.tokens:
            return [self.token] if self.token else []
        floor = 0.5 * self.tokens[0].score
        words = [score.word for score in self.tokens if score.score >= floor]
        return words + [self.token] if self.token and self.token not in words else words

    def to_dict(self) -> dict:
        """Return the JSON-ready probe record used in report.json."""
        return {
            "kind": "text",
            "box": None,
            "token": self.token,
            "attributed_tokens": [score.to_dict() for score in self.tokens],
            "localization": float(self.localization),
            "exit_rate": float(self.exit_rate),
            "entry_rate": float(self.entry_rate),
            "control_entry_rate": float(self.control_entry_rate),
            "control_token": self.control_token,
            "candidate_rates": {word: {k: round(float(v), 4) for k, v in rates.items()}
                                for word, rates in self.candidates.items()},
            "n_members_probed": int(self.n_members_probed),
            "n_nonmembers_probed": int(self.n_nonmembers_probed),
            "feature_clusters": [int(c) for c in self.feature_clusters],
            "extended_member_count": None,
            "notes": [_example_note(example) for example in self.examples],
        }


def _example_note(example: dict) -> str:
    where = "inside the attractor" if example["inside"] else "outside it"
    prediction = f", predicted {example['prediction']}" if example.get("prediction") is not None else ""
    return (f"{example['kind']} probe: \u201c{example['text']}\u201d landed in cluster "
            f"{example['cluster']} ({where}{prediction})")


def token_attribution(
    texts: list[str],
    centroid: np.ndarray,
    embed: Callable[[list[str]], np.ndarray],
    *,
    top: int | None = None,
) -> list[TokenScore]:
    """Rank the words of ``texts`` by how far deleting them moves the texts from ``centroid``.

    Parameters
    ----------
    texts : list of str
        The probed members.
    centroid : ndarray of shape (n_dims,)
        Centroid of the cluster in embedding space.
    embed : callable
        Maps a list of texts to embeddings of shape (n_texts, n_dims).
    top : int, optional
        Return only this many words.

    Returns
    -------
    list of TokenScore
        Strongest first; ties are broken alphabetically.
    """
    if not texts:
        raise ValueError("token attribution needs at least one member text, got none")
    base = np.linalg.norm(embed(list(texts)) - centroid, axis=1)
    scale = max(float(base.mean()), 1e-12)

    edited, owners, words = [], [], []
    for row, text in enumerate(texts):
        for word in sorted(word_set(text)):
            edited.append(delete_word(text, word))
            owners.append(row)
            words.append(word)
    if not edited:
        return []
    moved = np.linalg.norm(embed(edited) - centroid, axis=1)
    effects = (moved - base[np.asarray(owners)]) / scale

    totals: dict[str, list] = {}
    for word, effect in zip(words, effects):
        totals.setdefault(word, []).append(float(effect))
    n_texts = len(texts)
    ranked = [
        TokenScore(word=word, score=sum(values) / n_texts, share=len(values) / n_texts,
                   mean_effect=float(np.mean(values)))
        for word, values in totals.items()
    ]
    ranked.sort(key=lambda item: (-item.score, item.word))
    return ranked[:top] if top is not None else ranked


def probe_text_cluster(
    texts: list[str],
    cluster_ids: np.ndarray,
    attractor_ids: list,
    embeddings: np.ndarray,
    *,
    embed: Callable[[list[str]], np.ndarray],
    assign: Callable[[np.ndarray], np.ndarray],
    predict: Callable[[list[str]], np.ndarray] | None = None,
    labels: np.ndarray | None = None,
    class_names=None,
    top_tokens: int = 3,
    control_token: str | None = None,
    where: str = "random",
    max_probe: int = 200,
    seed: int = 0,
) -> TextProbeResult:
    """Find and test the words that pull inputs into the clusters ``attractor_ids``.

    The ``top_tokens`` words with the highest attribution are each tested
    with template probes. The word reported as ``token`` is the causal one
    with the highest exit plus entry rate, or the top attributed word when
    none is causal.

    Parameters
    ----------
    texts : list of str
        The audit texts, in the rows the detector saw.
    cluster_ids : ndarray of shape (n,)
        The detector's cluster per row.
    attractor_ids : list of int
        The cluster(s) that make up the attractor.
    embeddings : ndarray of shape (n, n_dims)
        The audit embeddings (for the centroid).
    embed : callable
        Texts to embeddings with the audited model and layer.
    assign : callable
        Embeddings to cluster ids, e.g. :meth:`AttractorDetector.assign`.
    predict : callable, optional
        Texts to predicted class codes, to say where probe sentences landed.
    labels : ndarray of shape (n,), optional
        Classes of the rows; entry probes then use non-members of the
        classes that make up at least 5% of the members.
    where : {"random", "start", "end"}
        Where the word is inserted in entry and control probes.
    max_probe : int
        Most members (and non-members) probed; a seeded sample above that.
    """
    rng = np.random.default_rng(seed)
    members, others = _probe_rows(cluster_ids, attractor_ids, labels, max_probe, rng)
    if members.size == 0:
        raise ValueError(f"clusters {attractor_ids} have no members to probe")
    inside = np.isin(cluster_ids, attractor_ids)
    centroid = embeddings[inside].mean(axis=0)
    member_texts = [texts[i] for i in members]
    other_texts = [texts[i] for i in others]

    ranked = token_attribution(member_texts, centroid, embed)
    tokens = ranked[:top_tokens]
    positive = sum(max(score.score, 0.0) for score in ranked)
    candidate_words = {score.word for score in tokens}
    control = control_token or next((w for w in CONTROL_WORDS if w not in candidate_words), CONTROL_WORDS[-1])
    positions = insert_positions(other_texts, rng, where=where)

    def share_inside(batch: list[str]) -> float:
        if not batch:
            return 0.0
        return float(np.mean(np.isin(assign(embed(batch)), attractor_ids)))

    candidates = {}
    for score in tokens:
        removed = [delete_word(text, score.word) for text in member_texts]
        # Entry and control probes use only the non-members that lack the word.
        lacking = [i for i, text in enumerate(other_texts) if not contains_word(text, score.word)]
        receivers = [other_texts[i] for i in lacking]
        where_to = [positions[i] for i in lacking]
        candidates[score.word] = {
            "exit_rate": 1.0 - share_inside(removed),
            "entry_rate": share_inside(_insert_all(receivers, score.word, where_to)),
            "control_entry_rate": share_inside(_insert_all(receivers, control, where_to)),
        }
    token = _best_candidate(candidates, tokens)
    rates = candidates.get(token, {"exit_rate": 0.0, "entry_rate": 0.0, "control_entry_rate": 0.0})

    result = TextProbeResult(
        tokens=tokens, token=token,
        localization=(max(_score_of(ranked, token), 0.0) / positive) if positive > 0 else 0.0,
        control_token=control, n_members_probed=int(members.size),
        n_nonmembers_probed=int(others.size), candidates=candidates, **rates,
    )
    result.examples = _examples(member_texts, other_texts, token, control, positions, embed=embed,
                                assign=assign, predict=predict, attractor_ids=attractor_ids,
                                class_names=class_names)
    logger.info(
        "text probe clusters %s: top words %s; %r exit %.2f, entry %.2f, control (%r) %.2f",
        attractor_ids, [t.word for t in tokens], token, result.exit_rate, result.entry_rate,
        control, result.control_entry_rate,
    )
    return result


def _probe_rows(cluster_ids, attractor_ids, labels, max_probe, rng):
    inside = np.isin(cluster_ids, attractor_ids)
    member_rows = np.flatnonzero(inside)
    other_rows = np.flatnonzero(~inside & (cluster_ids != NOISE_LABEL))
    if labels is not None and member_rows.size:
        classes, counts = np.unique(labels[member_rows], return_counts=True)
        captured = classes[counts >= CAPTURED_CLASS_SHARE * member_rows.size]
        other_rows = other_rows[np.isin(labels[other_rows], captured)]
    return _sample(member_rows, max_probe, rng), _sample(other_rows, max_probe, rng)


def _insert_all(texts: list[str], word: str, positions: list[int]) -> list[str]:
    return [insert_word(text, word, position) for text, position in zip(texts, positions)]


def _best_candidate(candidates: dict, tokens: list) -> str:
    if not tokens:
        return ""
    causal = [word for word, rates in candidates.items()
              if is_causal(rates["exit_rate"], rates["entry_rate"], rates["control_entry_rate"])]
    if not causal:
        return tokens[0].word
    return max(causal, key=lambda word: candidates[word]["exit_rate"] + candidates[word]["entry_rate"])


def _score_of(ranked: list, word: str) -> float:
    return next((score.score for score in ranked if score.word == word), 0.0)


def _examples(member_texts, other_texts, token, control, positions, *, embed, assign, predict,
              attractor_ids, class_names) -> list:
    """Return a few probe sentences of each kind with the cluster they landed in."""
    if not token:
        return []
    count = EXAMPLES_PER_KIND
    carriers = [text for text in member_texts if contains_word(text, token)][:count]
    probes = [("removal", delete_word(text, token)) for text in carriers]
    probes += [("insertion", text) for text in _insert_all(other_texts[:count], token, positions[:count])]
    probes += [("control", text) for text in _insert_all(other_texts[:count], control, positions[:count])]
    if not probes:
        return []
    sentences = [text for _, text in probes]
    landed = assign(embed(sentences))
    predicted = predict(sentences) if predict is not None else [None] * len(sentences)
    return [
        {"kind": kind, "text": text, "cluster": int(cluster), "inside": bool(cluster in attractor_ids),
         "prediction": _class_name(prediction, class_names)}
        for (kind, text), cluster, prediction in zip(probes, landed, predicted)
    ]


def _class_name(code, class_names):
    if code is None:
        return None
    if class_names is not None and 0 <= int(code) < len(class_names):
        return str(class_names[int(code)])
    return str(int(code))


def find_token_clusters(
    texts: list[str],
    cluster_ids: np.ndarray,
    probe: TextProbeResult,
    attractor_ids: list,
    *,
    embed: Callable[[list[str]], np.ndarray],
    assign: Callable[[np.ndarray], np.ndarray],
    max_probe: int = 100,
    seed: int = 0,
) -> None:
    """Record in ``probe`` the other clusters that the same word keeps together.

    A cluster joins when deleting ``probe.token`` moves at least
    ``EXIT_RATE`` of its probed members out of it. Members without the word
    count as staying, so a cluster joins only when most of its members carry it.
    """
    if not probe.token:
        return
    rng = np.random.default_rng(seed)
    for other in np.unique(cluster_ids):
        if other == NOISE_LABEL or other in attractor_ids:
            continue
        rows = _sample(np.flatnonzero(cluster_ids == other), max_probe, rng)
        carriers = [texts[i] for i in rows if contains_word(texts[i], probe.token)]
        left = 0
        if carriers:
            removed = [delete_word(text, probe.token) for text in carriers]
            left = int(np.sum(assign(embed(removed)) != other))
        rate = left / rows.size
        probe.feature_cluster_exit_rates[int(other)] = rate
        if rate >= EXIT_RATE:
            probe.feature_clusters.append(int(other))


def token_presence(texts: list[str], token: str) -> np.ndarray:
    """Return a bool per text: does it contain ``token`` as a whole word?"""
    return np.array([contains_word(text, token) for text in texts], dtype=bool)


def _sample(rows: np.ndarray, limit: int, rng) -> np.ndarray:
    if rows.size <= limit:
        return rows
    return np.sort(rng.choice(rows, size=limit, replace=False))
