import numpy as np
import pytest
import torch
from torch import nn

from mitigate.extract import LayerCapture, extract_images, hidden_state, pool
from mitigate.models import SmallCNN


def test_extract_matches_embed():
    torch.manual_seed(0)
    model = SmallCNN(embedding_dim=8)
    images = np.random.default_rng(0).random((10, 1, 28, 28), dtype=np.float32)
    embeddings, predictions, confidence = extract_images(model, images, layer="penultimate", batch_size=3)
    with torch.no_grad():
        expected = model.embed(torch.from_numpy(images)).numpy()
        logits = model(torch.from_numpy(images))
    np.testing.assert_allclose(embeddings, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(predictions, logits.argmax(dim=1).numpy())
    assert confidence.shape == (10,)


def test_unknown_layer_lists_names():
    with pytest.raises(ValueError, match="layer 'fc9' not found.*penultimate"):
        LayerCapture(SmallCNN(), "fc9")


class TupleLayer(nn.Module):
    def forward(self, x):
        return (x * 2, "extra")


class Wrapper(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


def test_hook_takes_tensor_from_tuple():
    model = Wrapper(TupleLayer())
    x = torch.ones(2, 3, 4)
    with LayerCapture(model, "inner", pooling="mean") as capture:
        model(x)
        out = capture.pop()
    assert out.shape == (2, 4)
    assert torch.allclose(out, torch.full((2, 4), 2.0))


def test_hidden_state_from_mapping():
    tensor = torch.zeros(2, 5)
    assert hidden_state({"last_hidden_state": tensor}) is tensor


def test_hidden_state_unknown_type_lists_found():
    with pytest.raises(TypeError, match=r"found \['str', 'int'\]"):
        hidden_state(("a", 1))
    with pytest.raises(TypeError, match="unsupported layer output type float"):
        hidden_state(1.5)


class Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(2, 2)

    def forward(self, x):
        self.layer(x)
        raise RuntimeError("boom")


def test_hook_removed_when_forward_raises():
    model = Exploding()
    with pytest.raises(RuntimeError, match="boom"):
        with LayerCapture(model, "layer"):
            model(torch.zeros(1, 2))
    assert len(model.layer._forward_hooks) == 0


def test_stored_outputs_detached_on_cpu():
    model = SmallCNN()
    with LayerCapture(model, "penultimate") as capture:
        model(torch.zeros(2, 1, 28, 28))
        out = capture.pop()
    assert not out.requires_grad
    assert out.device.type == "cpu"


def test_pool_conv_maps_and_masks():
    conv = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    assert pool(conv, "mean").shape == (2, 3)
    assert pool(conv, "flatten").shape == (2, 12)
    tokens = torch.tensor([[[1.0], [3.0], [100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert pool(tokens, "mean", mask).item() == 2.0
    assert pool(tokens, "first").item() == 1.0
    with pytest.raises(ValueError, match="invalid pooling 'max'"):
        pool(tokens, "max")
