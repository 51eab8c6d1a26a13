"""Shared fixtures. Every test runs offline: a hub request would fail loudly."""

import json
import os

import numpy as np
import pytest

for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[variable] = "1"


def planted_blobs(seed: int = 0, *, n_per_class: int = 150, n_classes: int = 4, dims: int = 16,
                  attractor: bool = True):
    """Return embeddings, labels, predictions and the planted attractor mask.

    Each class is a Gaussian blob predicted correctly. With ``attractor``,
    a fifth of every class is moved into one tight blob that the model
    predicts as class 0: a planted hypnotic attractor.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=8.0, size=(n_classes + 1, dims))
    labels = np.repeat(np.arange(n_classes), n_per_class)
    embeddings = centres[labels] + rng.normal(size=(labels.size, dims))
    predictions = labels.copy()
    planted = np.zeros(labels.size, dtype=bool)
    if attractor:
        planted = rng.random(labels.size) < 0.2
        embeddings[planted] = centres[-1] + 0.3 * rng.normal(size=(planted.sum(), dims))
        predictions[planted] = 0
    return embeddings.astype(np.float32), labels, predictions, planted


COPY_DIMS = 16


def _group(rng, centre, mixing, n):
    """Sample ``n`` rows of one group: a flat cloud in the group's own plane around ``centre``."""
    return centre + rng.normal(size=(n, mixing.shape[0])) @ mixing + 0.1 * rng.normal(size=(n, COPY_DIMS))


def copied_groups(n_groups: int, *, seed: int = 0, n: int = 200, copies: bool = True):
    """Return embeddings and cluster ids of ``n_groups`` groups and, with ``copies``, a moved copy of each.

    Each group has its own centre and shape (a cloud in a 4-dimensional
    subspace of its own), as classes of a trained model differ in shape.
    A copy draws new rows from the
    same group and adds one shared shift, as a sticker does to every image
    that carries it. Values are non-negative on average, like a ReLU layer,
    so the carriers have the larger norm. Cluster ids: groups first, then
    their copies in the same order.
    """
    rng = np.random.default_rng(seed)
    shift = np.zeros(COPY_DIMS)
    shift[:4] = 6.0
    parts, ids = [], []
    for k in range(n_groups):
        centre = np.abs(rng.normal(scale=8.0, size=COPY_DIMS))
        mixing = rng.normal(scale=1.5, size=(4, COPY_DIMS))
        parts.append(_group(rng, centre, mixing, n))
        ids.append(np.full(n, k))
        if copies:
            parts.append(_group(rng, centre + shift, mixing, n))
            ids.append(np.full(n, n_groups + k))
    order = np.argsort(np.concatenate(ids), kind="stable")
    embeddings = np.vstack(parts)[order].astype(np.float32)
    return embeddings, np.concatenate(ids)[order]


@pytest.fixture
def blobs():
    return planted_blobs()


@pytest.fixture
def null_blobs():
    return planted_blobs(attractor=False)


@pytest.fixture(autouse=True)
def validate_written_reports(request):
    """Check every report.json and comparison.json that a test wrote under tmp_path against its schema.

    A test that writes an invalid file on purpose names it otherwise, or
    marks itself with ``@pytest.mark.invalid_report``.
    """
    if "tmp_path" not in request.fixturenames or request.node.get_closest_marker("invalid_report"):
        yield
        return
    # Taken before the test runs: tmp_path is torn down before this fixture.
    tmp_path = request.getfixturevalue("tmp_path")
    yield
    from mitigate.report.schema import validate_comparison, validate_report

    for path in sorted(tmp_path.rglob("report.json")):
        validate_report(json.loads(path.read_text()))
    for path in sorted(tmp_path.rglob("comparison.json")):
        validate_comparison(json.loads(path.read_text()))
