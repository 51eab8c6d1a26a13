import numpy as np
import pytest

from mitigate import data
from mitigate.diagnose import Diagnosis, diagnose_image_attractor, effective_rank
from mitigate.probes import (
    feature_presence,
    find_feature_clusters,
    locate_region,
    occlusion_attribution,
    probe_image_cluster,
    refine_box,
)
from mitigate.remedies import REMEDY_TABLE, choose_remedy, counterfactual_augment_images

BOX = data.square_box(28, size=4, corner="top_right")


def toy_world(n=200, seed=0):
    """Images with a random blob; half carry the corner square (cluster 1)."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 1, 28, 28), dtype=np.float32)
    images[:, :, 8:20, 8:20] = rng.random((n, 1, 12, 12)) * 0.8
    has_square = np.arange(n) % 2 == 0
    top, left, h, w = BOX
    images[has_square, :, top:top + h, left:left + w] = 1.0
    return images, has_square


def square_embed(images):
    """A 'model' whose embedding is dominated by the corner pixels."""
    top, left, h, w = BOX
    corner = images[:, 0, top:top + h, left:left + w].reshape(len(images), -1)
    centre = images[:, 0, 8:20, 8:20].reshape(len(images), -1).mean(axis=1, keepdims=True)
    return np.hstack([corner, 0.1 * centre])


def square_assign(embeddings):
    return (embeddings[:, :-1].mean(axis=1) > 0.5).astype(int)


def test_occlusion_locates_square():
    images, has_square = toy_world()
    members = images[has_square]
    centroid = square_embed(members).mean(axis=0)
    attribution = occlusion_attribution(members, centroid, square_embed, cell=4)
    box, localization = locate_region(attribution)
    top, left, h, w = box
    assert top <= BOX[0]
    assert left <= BOX[1]
    assert top + h >= BOX[0] + BOX[2]
    assert left + w >= BOX[1] + BOX[3]
    assert h * w <= 64
    assert localization > 0.5


def test_probe_confirms_causal_square():
    images, has_square = toy_world()
    clusters = has_square.astype(int)
    embeddings = square_embed(images)
    probe = probe_image_cluster(images, clusters, [1], embeddings, embed=square_embed,
                                assign=square_assign, cell=4)
    assert probe.box == BOX
    assert probe.exit_rate == 1.0
    assert probe.entry_rate == 1.0
    assert probe.control_entry_rate == 0.0
    assert probe.causal


def test_probe_rejects_non_causal_region():
    images, has_square = toy_world()
    clusters = has_square.astype(int)

    def centre_embed(batch):
        return batch[:, 0, 8:20, 8:20].reshape(len(batch), -1)

    def fixed_assign(embeddings):
        return np.zeros(len(embeddings), dtype=int)

    probe = probe_image_cluster(images, clusters, [1], centre_embed(images), embed=centre_embed,
                                assign=fixed_assign, cell=4)
    assert not probe.causal


def code_world(n=200, seed=0):
    """Every image carries a 2x2 code in the top-left corner; the members' code is [1, 0; 0, 1]."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 1, 28, 28), dtype=np.float32)
    images[:, :, 8:20, 8:20] = rng.random((n, 1, 12, 12)) * 0.8
    is_member = np.arange(n) % 2 == 0
    images[is_member, 0, 1:3, 1:3] = [[1.0, 0.0], [0.0, 1.0]]
    images[~is_member, 0, 1:3, 1:3] = [[0.0, 1.0], [1.0, 0.0]]
    return images, is_member


def code_embed(images):
    return images[:, 0, 1:3, 1:3].reshape(len(images), -1)


def code_assign(embeddings):
    # Anything but the other inputs' code reads as the members' code, blank included.
    other_code = np.array([0.0, 1.0, 1.0, 0.0])
    return (np.abs(embeddings - other_code).sum(axis=1) > 1.0).astype(int)


def test_probe_swap_removes_stamped_code():
    images, is_member = code_world()
    probe = probe_image_cluster(images, is_member.astype(int), [1], code_embed(images),
                                embed=code_embed, assign=code_assign, cell=2)
    assert probe.fill_exit_rate == 0.0
    assert probe.swap_exit_rate == 1.0
    assert probe.exit_rate == 1.0


def test_refine_box_skips_varying_pixels():
    rng = np.random.default_rng(0)
    members = np.zeros((100, 1, 10, 10))
    members[:, 0, 0:2, 0:2] = 1.0                          # the same mark on every member
    members[:, 0, 2:5, 0:5] = 0.3 + 0.7 * rng.random((100, 3, 5))  # garment: varies, brighter on average
    others = np.zeros((100, 1, 10, 10))
    member_mean, other_mean = members.mean(axis=0), others.mean(axis=0)

    assert refine_box((0, 0, 5, 5), member_mean, other_mean, margin=1) == (0, 0, 5, 5)
    refined = refine_box((0, 0, 5, 5), member_mean, other_mean, margin=1, member_std=members.std(axis=0))
    assert refined == (0, 0, 2, 2)


def test_feature_clusters_found():
    images, has_square = toy_world()
    clusters = np.where(has_square, 1, 0)
    clusters[has_square & (np.arange(len(images)) % 4 == 0)] = 2  # a second square cluster

    def assign(embeddings):
        return square_assign(embeddings)  # squares removed land in cluster 0

    probe = probe_image_cluster(images, clusters, [1], square_embed(images), embed=square_embed,
                                assign=assign, cell=4)
    find_feature_clusters(images, clusters, probe, [1], embed=square_embed, assign=assign)
    assert probe.feature_clusters == [2]
    assert probe.feature_cluster_exit_rates[0] == 0.0


def test_counterfactual_augmentation_decorrelates():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, size=4000)
    images = np.zeros((4000, 1, 28, 28), dtype=np.float32)
    planted, _ = data.plant_spurious_square(images, labels, target_class=0, p_target=1.0,
                                            p_other=0.0, box=BOX, seed=0)
    patch = np.ones((1, 4, 4), dtype=np.float32)
    augmented, stats = counterfactual_augment_images(planted, box=BOX, patch=patch, paste_rate=0.5)
    present = feature_presence(augmented, BOX, patch)
    rates = [present[labels == k].mean() for k in range(4)]
    assert max(rates) - min(rates) < 0.06
    assert stats["removed"] == int((labels == 0).sum())
    assert planted[labels == 0][:, 0, 1:5, 23:27].min() == 1.0  # the input is not modified


def test_effective_rank_bounds():
    rng = np.random.default_rng(0)
    assert effective_rank(rng.normal(size=(500, 10))) > 9.0
    line = np.outer(rng.normal(size=500), np.ones(10))
    assert effective_rank(line) == pytest.approx(1.0, abs=0.01)


class FakeCluster:
    top_prediction = 0
    prediction_concentration = 0.9


class FakeProbe:
    box = (1, 23, 4, 4)
    exit_rate = 1.0
    entry_rate = 0.8
    control_entry_rate = 0.0
    causal = True


def test_diagnosis_spurious_from_training_correlation():
    diagnosis = diagnose_image_attractor(
        FakeCluster(), FakeProbe(), image_shape=(28, 28), presence_by_class={0: 0.99, 1: 0.01, 2: 0.0},
        class_names=["a", "b", "c"], rank_share=0.5,
    )
    assert diagnosis.cause == "spurious_correlation"
    assert any("99% of training images of class 'a'" in line for line in diagnosis.evidence)


def test_diagnosis_collapse_when_no_region_and_low_rank():
    probe = FakeProbe()
    probe.causal = False
    diagnosis = diagnose_image_attractor(FakeCluster(), probe, image_shape=(28, 28), presence_by_class=None,
                                         class_names=None, rank_share=0.02)
    assert diagnosis.cause == "representational_collapse"


def test_remedy_table_and_forcing():
    assert choose_remedy("spurious_correlation").remedy == "counterfactual_augmentation"
    assert choose_remedy("undetermined").remedy is None
    forced = choose_remedy("spurious_correlation", forced="uniformity_loss")
    assert forced.remedy == "uniformity_loss"
    assert "forced" in forced.reason
    with pytest.raises(ValueError, match="unknown remedy 'magic'"):
        choose_remedy("spurious_correlation", forced="magic")
    assert set(REMEDY_TABLE) == {"spurious_correlation", "representational_collapse",
                                 "gradient_starvation", "data_artifact"}
    assert isinstance(Diagnosis("undetermined"), Diagnosis)
