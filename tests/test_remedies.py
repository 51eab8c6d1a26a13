import numpy as np
import pytest
import torch

from types import SimpleNamespace

from mitigate.audit import _no_longer_wrong
from mitigate.probes import region_label_evidence
from mitigate.remedies import (
    REGULARIZER_REMEDIES,
    ArtifactStripper,
    augmentation_mode,
    build_regularizer,
    choose_remedy,
    derive_stripper,
    swap_region_images,
)


def test_mask_stripper_fills_box():
    images = np.ones((2, 1, 8, 8), dtype=np.float32)
    stripped = ArtifactStripper(kind="mask", box=(0, 0, 2, 3), fill=0.0)(images)
    assert stripped[:, :, :2, :3].max() == 0.0
    assert stripped[:, :, 2:, :].min() == 1.0
    assert images.min() == 1.0


def test_pattern_stripper_removes_pattern_any_strength():
    rng = np.random.default_rng(0)
    pattern = np.zeros((1, 8, 8), dtype=np.float32)
    pattern[0, ::2, ::2] = 1.0
    clean = rng.random((5, 1, 8, 8)).astype(np.float32) * 0.1
    strengths = np.array([0.0, 0.5, 1.0, 2.0, 3.0], dtype=np.float32)
    marked = clean + strengths[:, None, None, None] * pattern
    stripper = ArtifactStripper(kind="pattern", pattern=pattern)
    stripped = stripper(marked)
    residual = (stripped.reshape(5, -1) @ pattern.reshape(-1)) / (pattern ** 2).sum()
    assert np.abs(residual).max() < 1e-5 + 0.1


def test_stripper_accepts_tensors_and_roundtrips(tmp_path):
    stripper = ArtifactStripper(kind="mask", box=(1, 1, 2, 2), fill=0.5)
    out = stripper(torch.zeros(1, 1, 4, 4))
    assert isinstance(out, torch.Tensor)
    assert out[0, 0, 1, 1].item() == 0.5
    stripper.save(tmp_path / "s")
    loaded = ArtifactStripper.load(tmp_path / "s")
    assert loaded.kind == "mask"
    assert loaded.box == (1, 1, 2, 2)


def test_derive_stripper_mask_or_pattern():
    class Probe:
        box = (0, 0, 2, 2)
        causal = True

    members = np.ones((4, 1, 8, 8), dtype=np.float32)
    others = np.zeros((4, 1, 8, 8), dtype=np.float32)
    assert derive_stripper(Probe(), members, others, image_area=64).kind == "mask"
    Probe.box = (0, 0, 8, 8)
    pixels = derive_stripper(Probe(), members, others, image_area=64)
    assert pixels.kind == "pixels"
    Probe.box, Probe.causal = (0, 0, 2, 2), False
    assert derive_stripper(Probe(), members, others, image_area=64).kind == "pixels"
    assert pixels.pattern.shape == (1, 8, 8)


def test_pixel_stripper_erases_clipped_pattern():
    rng = np.random.default_rng(1)
    mask = (rng.random((1, 8, 8)) < 0.3).astype(np.float32)
    clean = rng.random((6, 1, 8, 8)).astype(np.float32)
    marked = np.clip(clean + 0.8 * mask, 0, 1)
    stripper = ArtifactStripper(kind="pixels", pattern=mask)
    np.testing.assert_array_equal(stripper(marked)[:, :, mask[0] > 0], stripper(clean)[:, :, mask[0] > 0])
    np.testing.assert_array_equal(stripper(marked)[:, :, mask[0] == 0], clean[:, :, mask[0] == 0])


@pytest.mark.parametrize("remedy", REGULARIZER_REMEDIES)
def test_regularizers_give_finite_gradients(remedy):
    embeddings = torch.randn(16, 8, requires_grad=True)
    logits = torch.randn(16, 3, requires_grad=True)
    members = np.zeros(100, dtype=bool)
    members[:50] = True
    regularizer = build_regularizer(remedy, weight=0.5, train_members=members)
    loss = regularizer(embeddings, logits, torch.zeros(16, dtype=torch.long), 0, np.arange(40, 56))
    loss.backward()
    assert torch.isfinite(loss)
    grads = [t.grad for t in (embeddings, logits) if t.grad is not None]
    assert grads, "the loss reached neither the embeddings nor the logits"
    for grad in grads:
        assert torch.isfinite(grad).all()


def test_collapse_penalty_needs_members():
    with pytest.raises(ValueError, match="needs the training rows"):
        build_regularizer("collapse_penalty", weight=1.0)


def test_forced_remedy_lists_alternatives():
    choice = choose_remedy("data_artifact", forced="wider_bottleneck")
    assert choice.remedy == "wider_bottleneck"
    assert {a["remedy"] for a in choice.alternatives} >= {"artifact_stripping", "uniformity_loss"}


def test_narrow_collapse_gets_wider_bottleneck():
    choice = choose_remedy("representational_collapse", embedding_width=3, n_classes=10)
    assert choice.remedy == "wider_bottleneck"
    assert "3 units" in choice.reason


def test_wide_collapse_keeps_uniformity_loss():
    assert choose_remedy("representational_collapse", embedding_width=64, n_classes=10).remedy == "uniformity_loss"
    assert choose_remedy("representational_collapse").remedy == "uniformity_loss"


def test_located_starvation_gets_augmentation():
    assert choose_remedy("gradient_starvation", feature_located=True).remedy == "counterfactual_augmentation"
    assert choose_remedy("gradient_starvation").remedy == "spectral_decoupling"


def test_forced_remedy_ignores_evidence():
    choice = choose_remedy("representational_collapse", forced="uniformity_loss", embedding_width=3, n_classes=10)
    assert choice.remedy == "uniformity_loss"


def test_augmentation_mode_by_cause_and_override():
    assert augmentation_mode("gradient_starvation") == "swap"
    assert augmentation_mode("spurious_correlation") == "paste"
    assert augmentation_mode("gradient_starvation", "paste") == "paste"
    with pytest.raises(ValueError, match="unknown augmentation 'shuffle'"):
        augmentation_mode("gradient_starvation", "shuffle")


def test_swap_region_removes_label_code():
    # One random 4x4 code per class in the corner: the region alone gives the label.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 2000)
    codes = rng.random((5, 4, 4)).astype(np.float32)
    images = rng.random((2000, 1, 12, 12)).astype(np.float32)
    images[:, 0, :4, :4] = codes[labels]
    box = (0, 0, 4, 4)
    members = images[:10]
    before = region_label_evidence(images, labels, box, members, 0)
    swapped, stats = swap_region_images(images, box=box, seed=1)
    after = region_label_evidence(swapped, labels, box, members, 0)
    assert before.accuracy > 0.99
    assert after.accuracy < 0.3  # chance is 0.2
    assert stats["swapped"] > 1900
    # Outside the box nothing changed; inside, the same codes as often as before.
    outside = np.ones((12, 12), dtype=bool)
    outside[:4, :4] = False
    np.testing.assert_array_equal(swapped[:, 0][:, outside], images[:, 0][:, outside])
    np.testing.assert_array_equal(np.sort(swapped[:, 0, 0, 0]), np.sort(images[:, 0, 0, 0]))


def test_no_longer_wrong_detector_rule():
    detector = SimpleNamespace(accuracy_gap=0.2)
    labels = np.array([0, 1, 2, 3] * 25)
    mask = np.zeros(100, dtype=bool)
    mask[:20] = True
    fixed = labels.copy()
    fixed[:2] = 9  # 90% right inside, 100% outside
    passed, detail = _no_longer_wrong(detector, {"predictions": fixed}, mask, labels)
    assert passed
    assert "no longer misclassified" in detail
    assert "90.0%" in detail
    broken = labels.copy()
    broken[:12] = 9  # 40% right inside: under 50%
    passed, detail = _no_longer_wrong(detector, {"predictions": broken}, mask, labels)
    assert not passed
    assert "still misclassified" in detail
