"""WordNet noun glosses: line parsing and the labelled data set."""

import pytest

from mitigate.data import DataNotFoundError
from mitigate.text.wordnet import (
    DEFAULT_WORDNET_DIR,
    NOUN_FILE,
    gloss_definition,
    parse_synset_line,
    read_wordnet_glosses,
)

HEADER = "  1 This software and database is being provided to you, the LICENSEE, by  \n"
LINES = [
    HEADER,
    "  2 Princeton University under the following license.  \n",
    "01323958 05 n 01 dog 0 001 @ 01317541 n 0000 | a domesticated carnivore; \"the dog barked\"  \n",
    "02084071 05 n 02 sea_lion 0 eared_seal 0 000 | a large seal of the Pacific coast  \n",
    "03001627 06 n 01 chair 0 000 | a seat for one person, with a support for the back  \n",
    "07747607 13 n 01 orange 0 000 | round yellow to orange fruit of any of several citrus trees  \n",
    "10129825 18 n 01 girl 0 000 | a young woman; \"a young lady of 18\"  \n",
    "11608250 20 n 01 pine 0 000 | a coniferous tree  \n",
    "00023100 09 n 01 idea 0 000 | the content of cognition  \n",
]


@pytest.fixture
def noun_file(tmp_path):
    path = tmp_path / NOUN_FILE
    path.write_text("".join(LINES), encoding="utf-8")
    return path


def test_parse_synset_line_fields():
    synset = parse_synset_line(LINES[3])
    assert synset.offset == 2084071
    assert synset.lexname == "noun.animal"
    assert synset.words == ("sea lion", "eared seal")
    assert synset.gloss == "a large seal of the Pacific coast"


def test_parse_word_count_is_hexadecimal():
    line = ("09999999 18 n 0a a 0 b 0 c 0 d 0 e 0 f 0 g 0 h 0 i 0 j 0 000 | ten lemmas\n")
    assert len(parse_synset_line(line).words) == 10


def test_parse_skips_header_and_blank():
    assert parse_synset_line(HEADER) is None
    assert parse_synset_line("\n") is None


def test_parse_rejects_malformed_line():
    with pytest.raises(ValueError, match="malformed synset line"):
        parse_synset_line("01323958 05 n 01 dog 0 000 no gloss bar\n")
    with pytest.raises(ValueError, match="malformed synset line"):
        parse_synset_line("0132x958 05 n 01 dog 0 000 | gloss\n")


def test_parse_rejects_verb_file_number():
    with pytest.raises(ValueError, match="file number 30 is not a noun category"):
        parse_synset_line("00001740 30 v 01 grow 0 000 | become larger\n")


def test_gloss_definition_drops_examples():
    assert gloss_definition('a domesticated carnivore; "the dog barked"') == "a domesticated carnivore"
    assert gloss_definition("a seat; for one person") == "a seat; for one person"


def test_read_glosses_labels_follow_categories(noun_file):
    dataset = read_wordnet_glosses(noun_file, categories=("noun.food", "noun.animal"))
    assert dataset.features["label"].names == ["noun.food", "noun.animal"]
    assert dataset["text"] == ["a domesticated carnivore", "a large seal of the Pacific coast",
                               "round yellow to orange fruit of any of several citrus trees"]
    assert dataset["label"] == [1, 1, 0]
    assert dataset["offset"] == [1323958, 2084071, 7747607]


def test_read_glosses_keeps_examples_on_request(noun_file):
    dataset = read_wordnet_glosses(noun_file.parent, categories=("noun.person", "noun.plant"), examples=True)
    assert dataset["text"][0] == 'a young woman; "a young lady of 18"'


def test_read_glosses_rejects_bad_categories(noun_file):
    with pytest.raises(ValueError, match="unknown WordNet noun categories.*noun.animals"):
        read_wordnet_glosses(noun_file, categories=("noun.animals", "noun.food"))
    with pytest.raises(ValueError, match="repeat a name"):
        read_wordnet_glosses(noun_file, categories=("noun.food", "noun.food"))
    with pytest.raises(ValueError, match="fewer than 2 classes"):
        read_wordnet_glosses(noun_file, categories=("noun.food",))


def test_read_glosses_missing_file(tmp_path):
    with pytest.raises(DataNotFoundError, match="apt-get install wordnet-base"):
        read_wordnet_glosses(tmp_path / "nowhere")


@pytest.mark.skipif(not (DEFAULT_WORDNET_DIR / NOUN_FILE).is_file(),
                    reason="needs Debian's wordnet-base (apt-get install wordnet-base)")
def test_real_wordnet_has_thousands_per_category():
    dataset = read_wordnet_glosses()
    counts = {}
    for label in dataset["label"]:
        counts[label] = counts.get(label, 0) + 1
    assert len(counts) == 5
    assert min(counts.values()) >= 2000
    assert all(text.strip() for text in dataset["text"][:1000])
