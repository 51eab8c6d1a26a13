"""Named constants shared by detection, verification and the report."""

# HDBSCAN's label for points that belong to no cluster. Noise is never scored
# or flagged as a cluster.
NOISE_LABEL = -1

# ACS at or above these values marks a member set as collapsed (see
# mitigate.scores.attractor_collapse_score for the formula and
# docs/scores.md for how they were chosen). The class-matched score, used when
# labels are given, compares members with inputs of their own classes, so its
# scale is lower than that of the plain score against the whole set.
DEFAULT_ACS_THRESHOLD = 1.25
DEFAULT_ACS_THRESHOLD_UNLABELLED = 2.0

# The other flagging thresholds of mitigate.detect.AttractorDetector, also the
# defaults of a recipe's [detect] section (docs/scores.md explains each).
DEFAULT_ENTROPY_THRESHOLD = 0.3
DEFAULT_CONCENTRATION_THRESHOLD = 0.6
DEFAULT_ACCURACY_GAP = 0.2

# A member set whose squared spread is under this fraction of the whole set's
# spread is reported at the cap instead of as a division by (almost) zero. The
# largest ACS value that can be reported is therefore 1 / ACS_FLOOR.
ACS_FLOOR = 1e-6
