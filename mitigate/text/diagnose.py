"""Root-cause diagnosis of a text attractor from its probe evidence and training data."""

from __future__ import annotations

from mitigate.diagnose import Diagnosis, class_namer, correlated_class, diagnose_without_feature


def diagnose_text_attractor(
    cluster,
    probe,
    *,
    presence_by_class: dict | None,
    class_names,
    rank_share: float,
) -> Diagnosis:
    """Name the root cause of one text attractor.

    - The found word moves inputs in and out (causal probe) and is on at
      least 50% of one class's training texts and at most 10% of any
      other's: spurious correlation.
    - Causal, and the training correlation could not be measured: spurious
      correlation, with a note saying so.
    - Causal, but spread over several classes in training: a data artifact
      (a fixed string that marks a subset of texts, not a class cue).
    - Not causal: representational collapse when the embeddings use under
      10% of their width (effective rank), else undetermined.

    Parameters
    ----------
    cluster : ClusterScores
        The flagged cluster.
    probe : TextProbeResult or None
    presence_by_class : dict or None
        Share of training texts per class that contain the found word.
    rank_share : float
        Effective rank of the audit embeddings over their width.
    """
    evidence = []
    name = class_namer(class_names)
    if probe is not None and probe.causal:
        evidence.append(
            f"deleting the word {probe.token!r} moves {probe.exit_rate:.0%} of members out of the "
            f"cluster; inserting it moves {probe.entry_rate:.0%} of non-members in (control word "
            f"{probe.control_token!r}: {probe.control_entry_rate:.0%})"
        )
        correlated = correlated_class(presence_by_class)
        if correlated is not None:
            others = max(rate for code, rate in presence_by_class.items() if code != correlated)
            evidence.append(
                f"{probe.token!r} is in {presence_by_class[correlated]:.0%} of training texts of class "
                f"{name(correlated)} and at most {others:.1%} of any other class"
            )
            if cluster.top_prediction is not None:
                evidence.append(f"{cluster.prediction_concentration:.0%} of members are predicted as "
                                f"{name(cluster.top_prediction)}, whatever their class")
            return Diagnosis("spurious_correlation", evidence)
        if not presence_by_class:
            evidence.append("the word's correlation with a class in training could not be measured")
            return Diagnosis("spurious_correlation", evidence)
        shares = ", ".join(f"{name(code)} {rate:.0%}" for code, rate in sorted(presence_by_class.items()))
        evidence.append(f"the word is spread over several classes in training ({shares}): a fixed "
                        "marker of a subset of texts, not a class cue")
        return Diagnosis("data_artifact", evidence)

    if probe is not None:
        evidence.append(
            f"no attributed word explains membership (best {probe.token!r}: exit {probe.exit_rate:.0%}, "
            f"entry {probe.entry_rate:.0%}, control {probe.control_entry_rate:.0%})"
        )
    return diagnose_without_feature(evidence, rank_share)

