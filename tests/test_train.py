import numpy as np
import pytest
import torch

from mitigate.models import SmallCNN
from mitigate.train import (
    PrecisionUnavailableError,
    TrainConfig,
    resolve_precision,
    train_classifier,
)


def toy_images(n=256, seed=0):
    """Two classes that differ in overall brightness."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n)
    images = rng.random((n, 1, 8, 8), dtype=np.float32) * 0.5 + labels[:, None, None, None] * 0.5
    return images.astype(np.float32), labels.astype(np.int64)


def fresh_model():
    torch.manual_seed(0)
    return SmallCNN(num_classes=2, embedding_dim=8, channels=(4, 8), image_size=8)


def test_training_lowers_loss():
    images, labels = toy_images()
    model = fresh_model()
    result = train_classifier(model, images, labels, TrainConfig(epochs=3, batch_size=32), progress=False)
    losses = [entry["loss"] for entry in result.history]
    assert losses[-1] < losses[0]
    assert result.precision_used == "no"


class Interrupt(Exception):
    pass


def interrupt_at(step):
    def regularizer(embeddings, logits, labels, global_step, rows):
        if global_step == step:
            raise Interrupt()
        return embeddings.sum() * 0.0
    return regularizer


def test_resume_matches_uninterrupted(tmp_path):
    images, labels = toy_images()
    config = TrainConfig(epochs=2, batch_size=32, checkpoint_every=3, seed=5)

    reference = fresh_model()
    train_classifier(reference, images, labels, config, progress=False,
                     regularizer=interrupt_at(-1), embedding_layer="penultimate")

    interrupted = fresh_model()
    with pytest.raises(Interrupt):
        train_classifier(interrupted, images, labels, config, checkpoint_dir=tmp_path, progress=False,
                         regularizer=interrupt_at(10), embedding_layer="penultimate")
    resumed = fresh_model()
    result = train_classifier(resumed, images, labels, config, checkpoint_dir=tmp_path, progress=False,
                              regularizer=interrupt_at(-1), embedding_layer="penultimate")
    assert result.resumed_from_step == 8  # the end-of-epoch checkpoint before global step 10
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=1e-5, atol=1e-6)


def test_checkpoint_is_loaded_weights_only(tmp_path, monkeypatch):
    images, labels = toy_images(64)
    config = TrainConfig(epochs=1, batch_size=32)
    train_classifier(fresh_model(), images, labels, config, checkpoint_dir=tmp_path, progress=False)
    calls = []
    original = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    train_classifier(fresh_model(), images, labels, config, checkpoint_dir=tmp_path, progress=False)
    assert calls == [True]


def test_fp16_on_cpu_falls_back_and_says_so():
    precision, note = resolve_precision("fp16", required=False, cuda=False)
    assert precision == "no"
    assert "not supported" in note


def test_required_precision_fails_loudly():
    with pytest.raises(PrecisionUnavailableError, match="require_precision"):
        resolve_precision("fp16", required=True, cuda=False)


def test_bf16_recorded_when_used():
    images, labels = toy_images(64)
    result = train_classifier(fresh_model(), images, labels,
                              TrainConfig(epochs=1, batch_size=32, mixed_precision="bf16"), progress=False)
    assert result.precision_used == "bf16"
    assert np.isfinite(result.history[0]["loss"])


def test_unknown_precision_rejected():
    with pytest.raises(ValueError, match="invalid mixed_precision 'fp8'"):
        resolve_precision("fp8", required=False, cuda=False)
