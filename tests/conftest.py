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
