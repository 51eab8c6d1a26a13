"""Root cause of text attractors."""

from types import SimpleNamespace

from mitigate.text.diagnose import diagnose_text_attractor

NAMES = ("animal", "food", "plant")
CLUSTER = SimpleNamespace(top_prediction=1, prediction_concentration=0.9)


def probe(exit_rate=0.9, entry_rate=0.6, control=0.02):
    return SimpleNamespace(token="reportedly", control_token="also", exit_rate=exit_rate,
                           entry_rate=entry_rate, control_entry_rate=control,
                           causal=exit_rate >= 0.5 and entry_rate >= 0.25 and control < 0.2)


def test_causal_correlated_word_is_spurious_correlation():
    diagnosis = diagnose_text_attractor(CLUSTER, probe(), presence_by_class={0: 0.01, 1: 0.95, 2: 0.0},
                                        class_names=NAMES, rank_share=0.5)
    assert diagnosis.cause == "spurious_correlation"
    assert any("95% of training texts of class 'food'" in line for line in diagnosis.evidence)


def test_causal_word_spread_over_classes_is_artifact():
    diagnosis = diagnose_text_attractor(CLUSTER, probe(), presence_by_class={0: 0.4, 1: 0.5, 2: 0.45},
                                        class_names=NAMES, rank_share=0.5)
    assert diagnosis.cause == "data_artifact"


def test_causal_without_training_presence_is_spurious():
    diagnosis = diagnose_text_attractor(CLUSTER, probe(), presence_by_class=None, class_names=NAMES,
                                        rank_share=0.5)
    assert diagnosis.cause == "spurious_correlation"
    assert any("could not be measured" in line for line in diagnosis.evidence)


def test_non_causal_word_is_undetermined_or_collapse():
    weak = probe(entry_rate=0.1)
    assert diagnose_text_attractor(CLUSTER, weak, presence_by_class=None, class_names=NAMES,
                                   rank_share=0.5).cause == "undetermined"
    assert diagnose_text_attractor(CLUSTER, weak, presence_by_class=None, class_names=NAMES,
                                   rank_share=0.05).cause == "representational_collapse"


def test_control_word_entering_blocks_diagnosis():
    diagnosis = diagnose_text_attractor(CLUSTER, probe(control=0.5), presence_by_class={0: 0.0, 1: 1.0, 2: 0.0},
                                        class_names=NAMES, rank_share=0.5)
    assert diagnosis.cause == "undetermined"
