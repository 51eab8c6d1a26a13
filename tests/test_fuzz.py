"""Property tests: random shapes, dtypes, duplicates and non-finite values.

The detector must either raise one of its documented ValueErrors or return
finite scores, finite coordinates for every kept row and a report that passes
the schema. The losses must return a finite value and finite gradients for any
finite batch within the magnitudes their docs support. Each test has a fixed
example budget, so the run time is bounded (about a minute in all on 2 CPU
cores).
"""

import math
import re
import warnings

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mitigate.detect import AttractorDetector  # noqa: E402
from mitigate.detect_command import detect_report  # noqa: E402
from mitigate.report import validate_report  # noqa: E402

# The ValueErrors the detector documents for unusable input; anything else is a bug.
DOCUMENTED_ERRORS = re.compile(
    "|".join([
        r"contains NaN or infinite values",
        r"usable row\(s\); at least \d+ are needed",
        r"n_components=\d+ needs more than \d+ samples",
        r"beyond the float32 range",
    ])
)

DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int32, np.uint8, np.bool_]
SCALES = [1e-30, 1e-3, 1.0, 1e3, 1e30]


def embedding_inputs(seed: int):
    """Build embeddings with repeated rows, non-finite values and a random dtype from ``seed``.

    Every choice comes from one numpy generator, so the examples spread evenly
    over sizes, dtypes and magnitudes, and a failure is reproduced by its seed.
    """
    rng = np.random.default_rng(seed)
    # Sizes on both sides of the limits: 3 rows (too few for 2 UMAP components),
    # 64 distinct rows (UMAP instead of the small-sample path).
    n_rows = int(rng.choice([2, 3, 4, 9, 30, 63, 64, 120]))
    n_dims = int(rng.integers(1, 9))
    n_distinct = max(1, round(n_rows * rng.choice([0.0, 0.1, 0.5, 1.0])))

    centres = rng.normal(scale=5.0, size=(int(rng.integers(1, 5)), n_dims))
    distinct = centres[rng.integers(0, len(centres), n_distinct)] + rng.normal(size=(n_distinct, n_dims))
    rows = distinct[rng.integers(0, n_distinct, n_rows)]

    dtype = DTYPES[rng.integers(len(DTYPES))]
    if np.issubdtype(dtype, np.floating):
        limit = np.finfo(dtype).max / 100
        rows = np.clip(rows * rng.choice(SCALES), -limit, limit)
        for _ in range(int(rng.choice([0, 0, 1, 3]))):
            rows[rng.integers(0, n_rows), rng.integers(0, n_dims)] = rng.choice([np.nan, np.inf, -np.inf])
    elif dtype is np.bool_:
        rows = rows > 0
    else:
        info = np.iinfo(dtype)
        rows = np.clip(np.round(rows * 10), info.min, info.max)
    embeddings = rows.astype(dtype)

    n_classes = int(rng.integers(1, 5))
    labels = rng.integers(0, n_classes, n_rows) if rng.random() < 0.5 else None
    predictions = rng.integers(0, n_classes, n_rows) if rng.random() < 0.5 else None
    options = {
        "metric": str(rng.choice(["euclidean", "cosine"])),
        "nonfinite": str(rng.choice(["raise", "drop"])),
    }
    return embeddings, labels, predictions, options


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          derandomize=True)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_detector_never_crashes_or_returns_nonfinite(seed):
    embeddings, labels, predictions, options = embedding_inputs(seed)
    detector = AttractorDetector(**options, random_state=0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            detector.fit(embeddings, labels, predictions)
    except ValueError as err:
        match = DOCUMENTED_ERRORS.search(str(err))
        assert match, f"undocumented error: {err}"
        event(f"rejected: {match.group(0)}")
        return

    event(f"fitted: {detector.settings_['reducer'].split()[0]}, {len(detector.clusters_)} cluster(s)")
    kept = detector.kept_rows_
    assert detector.labels_.shape == (embeddings.shape[0],)
    assert np.isfinite(detector.coords_[kept]).all()
    for cluster in [*detector.clusters_, *detector.attractors_]:
        for name in ("acs", "relative_acs", "label_entropy", "top_label_share",
                     "prediction_concentration", "accuracy"):
            value = getattr(cluster, name)
            assert value is None or math.isfinite(value), (name, value)
    validate_report(detect_report(detector, labels=labels, predictions=predictions, source="fuzz"))


LOSS_NAMES = ["uniformity", "alignment", "variance", "covariance", "vicreg", "barlow_twins",
              "supcon", "spectral_decoupling", "effective_rank", "collapse_penalty"]


def _call_loss(name, embeddings, labels, temperature):
    import torch

    import losses

    other = embeddings.detach().flip(0).clone()
    if name == "uniformity":
        return losses.UniformityLoss()(embeddings)
    if name == "alignment":
        return losses.AlignmentLoss()(embeddings, other)
    if name == "variance":
        return losses.VarianceLoss()(embeddings)
    if name == "covariance":
        return losses.CovarianceLoss()(embeddings)
    if name == "vicreg":
        return losses.VICRegLoss()(embeddings, other)
    if name == "barlow_twins":
        return losses.BarlowTwinsLoss()(embeddings, other)
    if name == "supcon":
        return losses.SupConLoss(temperature=temperature)(embeddings, labels)
    if name == "spectral_decoupling":
        return losses.SpectralDecouplingLoss()(embeddings)
    if name == "effective_rank":
        return losses.EffectiveRankLoss()(embeddings)
    members = torch.zeros(embeddings.shape[0], dtype=torch.bool)
    members[: max(2, embeddings.shape[0] // 2)] = True
    return losses.CollapsePenalty()(embeddings, members)


@st.composite
def loss_inputs(draw):
    import torch

    n_rows = draw(st.sampled_from([2, 3, 8, 16]))
    n_dims = draw(st.sampled_from([1, 2, 8]))
    seed = draw(st.integers(min_value=0, max_value=2**16))
    generator = torch.Generator().manual_seed(seed)
    n_distinct = draw(st.sampled_from([1, 2, n_rows]))
    distinct = torch.randn(n_distinct, n_dims, generator=generator, dtype=torch.float64)
    rows = distinct[torch.randint(0, n_distinct, (n_rows,), generator=generator)]

    dtype = draw(st.sampled_from(["float32", "float16", "bfloat16", "float64"]))
    # Norms of 1e4 overflow the float16 gradient of the covariance terms, a limit
    # documented in CovarianceLoss; half precision is drawn at norms up to 100.
    largest = 1e4 if dtype in ("float32", "float64") else 1e2
    scale = draw(st.sampled_from([0.0, 1e-4, 1.0, largest]))
    embeddings = (rows * scale).to(getattr(torch, dtype))
    labels = torch.randint(0, draw(st.integers(1, 3)), (n_rows,), generator=generator)
    temperature = draw(st.sampled_from([0.01, 0.1, 1.0]))
    return embeddings, labels, temperature


@pytest.mark.parametrize("name", LOSS_NAMES)
@settings(max_examples=25, deadline=None, derandomize=True)
@given(case=loss_inputs())
def test_losses_finite_on_random_batches(name, case):
    import torch

    embeddings, labels, temperature = case
    embeddings = embeddings.clone().requires_grad_(True)
    with warnings.catch_warnings():
        # SupCon warns, and returns a connected zero, when no anchor has a positive.
        warnings.simplefilter("ignore", UserWarning)
        try:
            loss = _call_loss(name, embeddings, labels, temperature)
        except ValueError as err:
            # Batch-size limits are documented per loss (for example 2 rows for a variance).
            assert "needs a batch of at least" in str(err), str(err)
            event(f"rejected: {name}, {embeddings.shape[0]} rows")
            return
    event(f"computed: {name}")
    loss.backward()

    assert torch.isfinite(loss), (name, loss.item())
    assert torch.isfinite(embeddings.grad).all(), name
