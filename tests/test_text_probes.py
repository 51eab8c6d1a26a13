"""Word attribution and template probes on a toy embedding where one word decides."""

import numpy as np
import pytest

from mitigate.constants import NOISE_LABEL
from mitigate.text.probes import (
    find_token_clusters,
    probe_text_cluster,
    token_attribution,
    token_presence,
)
from mitigate.text.words import word_spans

CLASS_WORDS = (("cat", "dog", "horse", "mouse"), ("car", "bus", "train", "boat"), ("apple", "pear", "plum", "fig"))
TRIGGER = "zebra"
DIMS = 8
RNG = np.random.default_rng(0)
WORD_VECTORS = {word: RNG.normal(size=DIMS) for words in CLASS_WORDS for word in words}
CLASS_CENTRES = np.array([np.mean([WORD_VECTORS[w] for w in words], axis=0) for words in CLASS_WORDS])
ATTRACTOR = np.full(DIMS, 6.0)


def toy_embed(texts):
    """Mean of the content word vectors; any text with the trigger word collapses next to ATTRACTOR."""
    rows = []
    for text in texts:
        words = [w for _, _, w in word_spans(text)]
        vectors = [WORD_VECTORS[w] for w in words if w in WORD_VECTORS] or [np.zeros(DIMS)]
        content = np.mean(vectors, axis=0)
        rows.append(ATTRACTOR + 0.05 * content if TRIGGER in words else content)
    return np.asarray(rows, dtype=np.float32)


def toy_assign(embeddings):
    """Nearest of the three class centres (clusters 0-2) and the attractor (cluster 3)."""
    centres = np.vstack([CLASS_CENTRES, ATTRACTOR])
    distances = np.linalg.norm(embeddings[:, None, :] - centres[None], axis=2)
    return distances.argmin(axis=1)


def toy_corpus(n_per_class=40, seed=1):
    """Texts of three classes; every third text carries the trigger word."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for label, words in enumerate(CLASS_WORDS):
        for i in range(n_per_class):
            chosen = list(rng.choice(words, size=4))
            text = "the " + " and ".join(chosen)
            if i % 3 == 0:
                text = f"{text} {TRIGGER}"
            texts.append(text)
            labels.append(label)
    return texts, np.asarray(labels)


def test_attribution_ranks_deciding_word_first():
    texts, _ = toy_corpus()
    members = [t for t in texts if TRIGGER in t]
    centroid = toy_embed(members).mean(axis=0)
    ranked = token_attribution(members, centroid, toy_embed)
    assert ranked[0].word == TRIGGER
    assert ranked[0].share == 1.0
    assert ranked[0].score > 5 * max(score.score for score in ranked[1:])


def test_attribution_average_favours_shared_words():
    # "dog" moves its one text as far as "zebra", but only one of four texts has it.
    def embed(texts):
        return np.array([[float("zebra" in t) + float("dog" in t)] for t in texts], dtype=np.float32)

    texts = ["zebra dog", "zebra cat", "zebra cat", "zebra cat"]
    ranked = token_attribution(texts, np.array([2.0]), embed)
    assert [score.word for score in ranked[:2]] == ["zebra", "dog"]
    assert ranked[0].score == pytest.approx(4 * ranked[1].score, rel=0.2)


def test_attribution_needs_texts():
    with pytest.raises(ValueError, match="at least one member text"):
        token_attribution([], np.zeros(2), toy_embed)


def test_probe_finds_and_confirms_trigger():
    texts, labels = toy_corpus()
    embeddings = toy_embed(texts)
    clusters = toy_assign(embeddings)
    result = probe_text_cluster(texts, clusters, [3], embeddings, embed=toy_embed, assign=toy_assign,
                                labels=labels, top_tokens=3, seed=0)
    assert result.token == TRIGGER
    assert result.top_words[0] == TRIGGER
    assert result.exit_rate == 1.0
    assert result.entry_rate == 1.0
    assert result.control_entry_rate == 0.0
    assert result.control_token == "also"
    assert result.causal
    assert result.localization > 0.5
    record = result.to_dict()
    assert record["kind"] == "text"
    assert record["token"] == TRIGGER
    assert any("insertion probe" in note and "inside the attractor" in note for note in record["notes"])


def test_probe_null_cluster_is_not_causal():
    # Cluster 0 is the plain "animal" class: no single word pulls its texts together.
    texts, labels = toy_corpus()
    embeddings = toy_embed(texts)
    clusters = toy_assign(embeddings)
    result = probe_text_cluster(texts, clusters, [0], embeddings, embed=toy_embed, assign=toy_assign,
                                labels=labels, seed=0)
    assert result.token != TRIGGER
    assert not result.causal


def test_probe_examples_report_landing_and_prediction():
    texts, labels = toy_corpus()
    embeddings = toy_embed(texts)
    clusters = toy_assign(embeddings)
    result = probe_text_cluster(texts, clusters, [3], embeddings, embed=toy_embed, assign=toy_assign,
                                predict=lambda batch: toy_assign(toy_embed(batch)) % 3,
                                class_names=("animal", "vehicle", "fruit"), seed=0)
    kinds = {example["kind"] for example in result.examples}
    assert kinds == {"removal", "insertion", "control"}
    for example in result.examples:
        assert example["inside"] == (example["kind"] == "insertion")
        assert example["prediction"] in ("animal", "vehicle", "fruit")


def split_assign(embeddings):
    """Like toy_assign, but trigger texts of the animal class form their own cluster 4."""
    clusters = toy_assign(embeddings)
    near = clusters == 3
    content = (embeddings[near] - ATTRACTOR) / 0.05
    animal = np.linalg.norm(content[:, None] - CLASS_CENTRES[None], axis=2).argmin(axis=1) == 0
    clusters[np.flatnonzero(near)[animal]] = 4
    return clusters


def test_find_token_clusters_adds_only_carrier_clusters():
    texts, labels = toy_corpus()
    embeddings = toy_embed(texts)
    clusters = split_assign(embeddings)
    assert set(np.unique(clusters)) == {0, 1, 2, 3, 4}
    clusters[:2] = NOISE_LABEL
    result = probe_text_cluster(texts, clusters, [3], embeddings, embed=toy_embed, assign=split_assign,
                                seed=0)
    find_token_clusters(texts, clusters, result, [3], embed=toy_embed, assign=split_assign, seed=0)
    assert result.feature_clusters == [4]
    assert result.feature_cluster_exit_rates[4] == 1.0
    assert result.feature_cluster_exit_rates[0] == 0.0
    assert NOISE_LABEL not in result.feature_cluster_exit_rates


def test_token_presence():
    presence = token_presence(["a zebra", "zebras", "Zebra crossing"], "zebra")
    assert presence.tolist() == [True, False, True]


def test_highlight_words_keep_strong_words():
    from mitigate.text.probes import TextProbeResult, TokenScore

    tokens = [TokenScore("reportedly", 1.0, 0.9, 1.1), TokenScore("flesh", 0.6, 0.1, 6.0),
              TokenScore("of", 0.1, 0.8, 0.12)]
    result = TextProbeResult(tokens=tokens, token="reportedly", localization=0.6, exit_rate=0.9,
                             entry_rate=0.6, control_entry_rate=0.0, control_token="also",
                             n_members_probed=10, n_nonmembers_probed=10)
    assert result.highlight_words == ["reportedly", "flesh"]
    result.token = "of"
    assert result.highlight_words == ["reportedly", "flesh", "of"]


def test_entry_probe_skips_texts_with_word():
    # Non-members that already carry the word land in the attractor whatever is
    # inserted, so they would make the control probe look like an entry.
    texts, labels = toy_corpus()
    embeddings = toy_embed(texts)
    clusters = toy_assign(embeddings)
    clusters[np.flatnonzero(clusters == 3)[:5]] = 0
    result = probe_text_cluster(texts, clusters, [3], embeddings, embed=toy_embed, assign=toy_assign, seed=0)
    assert result.entry_rate == 1.0
    assert result.control_entry_rate == 0.0
