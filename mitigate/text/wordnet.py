"""WordNet noun glosses as a labelled text data set.

Every synset line of WordNet's ``data.noun`` carries a lexicographer file
number (its topic, such as noun.animal or noun.food) and a gloss written by
lexicographers. The file format is described in wndb(5WN) and the file
numbers in lexnames(5WN), both installed with Debian's ``wordnet-base``.
A synset line reads::

    offset lex_filenum ss_type w_cnt word lex_id [word lex_id...] p_cnt [ptr...] | gloss

with ``w_cnt`` a two-digit hexadecimal number and ``p_cnt`` a three-digit
decimal one. Lines that start with two spaces are the licence header.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from mitigate.data import DataNotFoundError

logger = logging.getLogger(__name__)

# Default folder of the WordNet database, as Debian's wordnet-base installs it.
DEFAULT_WORDNET_DIR = Path("/usr/share/wordnet")
NOUN_FILE = "data.noun"

# Noun lexicographer file numbers and names, from lexnames(5WN). The numbers
# 00-02 and 29-44 belong to adjectives, adverbs and verbs.
NOUN_LEXNAMES = {
    3: "noun.Tops", 4: "noun.act", 5: "noun.animal", 6: "noun.artifact",
    7: "noun.attribute", 8: "noun.body", 9: "noun.cognition", 10: "noun.communication",
    11: "noun.event", 12: "noun.feeling", 13: "noun.food", 14: "noun.group",
    15: "noun.location", 16: "noun.motive", 17: "noun.object", 18: "noun.person",
    19: "noun.phenomenon", 20: "noun.plant", 21: "noun.possession", 22: "noun.process",
    23: "noun.quantity", 24: "noun.relation", 25: "noun.shape", 26: "noun.state",
    27: "noun.substance", 28: "noun.time",
}
DEFAULT_CATEGORIES = ("noun.animal", "noun.artifact", "noun.food", "noun.person", "noun.plant")


@dataclass(frozen=True)
class Synset:
    """One parsed synset line: its byte offset, category, lemmas and gloss."""

    offset: int
    lexname: str
    words: tuple
    gloss: str


def parse_synset_line(line: str) -> Synset | None:
    """Parse one line of ``data.noun``; return None for licence header and blank lines.

    Raises
    ------
    ValueError
        For a line that is neither header nor a well-formed synset line,
        naming the problem and the start of the line.
    """
    if not line.strip() or line.startswith("  "):
        return None
    head, bar, gloss = line.partition(" | ")
    fields = head.split()
    if not bar or len(fields) < 6:
        raise ValueError(f"malformed synset line (expected 'offset lex_filenum ss_type w_cnt ... | gloss'): "
                         f"{line[:80]!r}")
    try:
        offset, lex_filenum, n_words = int(fields[0]), int(fields[1]), int(fields[3], 16)
    except ValueError as err:
        raise ValueError(f"malformed synset line ({err}): {line[:80]!r}") from err
    if lex_filenum not in NOUN_LEXNAMES:
        raise ValueError(f"lexicographer file number {lex_filenum:02d} is not a noun category "
                         f"(nouns use 03-28): {line[:80]!r}")

    # Lemmas alternate with their lex_id; underscores join the words of a collocation.
    words = tuple(fields[4 + 2 * i].replace("_", " ") for i in range(n_words) if 4 + 2 * i < len(fields))
    return Synset(offset=offset, lexname=NOUN_LEXNAMES[lex_filenum], words=words, gloss=gloss.strip())


def gloss_definition(gloss: str) -> str:
    """Return the definition part of a gloss, without the quoted example sentences.

    Examples follow the definition after ``; "``; they often contain the
    lemma itself, which would give the topic away.
    """
    return gloss.split('; "', 1)[0].strip().rstrip(";").strip()


def read_wordnet_glosses(
    path: Path | str | None = None,
    *,
    categories: tuple | list = DEFAULT_CATEGORIES,
    examples: bool = False,
):
    """Load the noun glosses of ``categories`` into a ``datasets.Dataset``.

    Parameters
    ----------
    path : path, optional
        ``data.noun`` itself or the folder holding it; default
        ``/usr/share/wordnet/data.noun``.
    categories : sequence of str
        Lexicographer file names such as ``"noun.animal"``; the label of a
        gloss is the position of its category in this sequence.
    examples : bool, default=False
        Keep the quoted example sentences after the definition.

    Returns
    -------
    datasets.Dataset
        Columns ``text`` (str), ``label`` (ClassLabel named by ``categories``)
        and ``offset`` (int, the synset's byte offset in ``data.noun``), in
        file order.

    Raises
    ------
    mitigate.data.DataNotFoundError
        When the file is missing (install Debian's ``wordnet-base``).
    ValueError
        For an unknown or repeated category, or a malformed line.
    """
    from datasets import ClassLabel, Dataset, Features, Value

    source = _noun_file(path)
    wanted = _check_categories(categories)
    texts, labels, offsets = [], [], []
    with source.open(encoding="utf-8") as handle:
        for line in handle:
            synset = parse_synset_line(line)
            if synset is None or synset.lexname not in wanted:
                continue
            text = synset.gloss if examples else gloss_definition(synset.gloss)
            if text:
                texts.append(text)
                labels.append(wanted[synset.lexname])
                offsets.append(synset.offset)

    features = Features({"text": Value("string"), "label": ClassLabel(names=list(categories)),
                         "offset": Value("int64")})
    logger.info("read %d glosses of %d categories from %s", len(texts), len(categories), source)
    return Dataset.from_dict({"text": texts, "label": labels, "offset": offsets}, features=features)


def _noun_file(path) -> Path:
    source = Path(path) if path is not None else DEFAULT_WORDNET_DIR
    if source.is_dir():
        source = source / NOUN_FILE
    if not source.is_file():
        raise DataNotFoundError(
            f"WordNet noun file not found: {source}; install Debian's wordnet-base "
            "(apt-get install wordnet-base) or point [data] dir at the folder holding data.noun"
        )
    return source


def _check_categories(categories) -> dict:
    known = set(NOUN_LEXNAMES.values())
    unknown = [name for name in categories if name not in known]
    if unknown:
        raise ValueError(f"unknown WordNet noun categories {unknown}; expected names such as "
                         f"{', '.join(DEFAULT_CATEGORIES)} (see lexnames(5WN))")
    if len(set(categories)) != len(categories):
        raise ValueError(f"categories {list(categories)} repeat a name; list each category once")
    if len(categories) < 2:
        raise ValueError(f"categories {list(categories)} name fewer than 2 classes; a classifier needs 2 or more")
    return {name: index for index, name in enumerate(categories)}
