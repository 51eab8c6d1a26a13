import pytest
import torch
from torch import nn

from mitigate.models import SmallCNN
from mitigate.widen import find_consumer, layer_width, resolve_widenable, widen


def test_widen_linear_preserves_function():
    torch.manual_seed(0)
    model = SmallCNN(embedding_dim=4)
    x = torch.rand(6, 1, 28, 28)
    before = model(x)
    info = widen(model, "penultimate", new_width=16, example_input=x)
    assert info == {"layer": "penultimate.0", "consumer": "classifier", "old_width": 4, "new_width": 16,
                    "init": "copy"}
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)
    assert model.embed(x).shape == (6, 16)


def test_widen_conv_through_pool_and_flatten():
    torch.manual_seed(1)
    model = SmallCNN()
    x = torch.rand(3, 1, 28, 28)
    before = model(x)
    info = widen(model, "features.3", new_width=40, example_input=x)
    assert info["consumer"] == "penultimate.0"
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)


def test_widen_noise_changes_only_copies():
    torch.manual_seed(2)
    model = SmallCNN(embedding_dim=4)
    original = model.penultimate[0].weight.detach().clone()
    widen(model, "penultimate", new_width=8, example_input=torch.rand(2, 1, 28, 28), noise=0.1)
    torch.testing.assert_close(model.penultimate[0].weight[:4], original)


@pytest.mark.parametrize("layer, new_width", [("penultimate", 16), ("features.3", 40)])
def test_widen_fresh_preserves_function(layer, new_width):
    torch.manual_seed(3)
    model = SmallCNN(embedding_dim=4)
    x = torch.rand(5, 1, 28, 28)
    before = model(x)
    info = widen(model, layer, new_width=new_width, example_input=x, init="fresh", seed=1)
    assert info["init"] == "fresh"
    assert info["new_width"] == new_width
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)


def test_fresh_widening_revives_dead_layer():
    # Every unit of the embedding layer is zero after its ReLU on every input: collapsed.
    def dead_model():
        torch.manual_seed(4)
        model = SmallCNN(embedding_dim=3)
        with torch.no_grad():
            model.penultimate[0].bias.fill_(-1e3)
        return model

    x = torch.rand(8, 1, 28, 28)
    copied, fresh = dead_model(), dead_model()
    widen(copied, "penultimate", new_width=12, example_input=x, init="copy", noise=0.01)
    widen(fresh, "penultimate", new_width=12, example_input=x, init="fresh")
    assert torch.count_nonzero(copied.embed(x)) == 0
    assert torch.count_nonzero(fresh.embed(x)[:, 3:]) > 0
    assert torch.count_nonzero(fresh.classifier.weight[:, 3:]) == 0


def test_widen_rejects_unknown_init():
    with pytest.raises(ValueError, match="init must be one of"):
        widen(SmallCNN(embedding_dim=4), "penultimate", new_width=8,
              example_input=torch.rand(2, 1, 28, 28), init="random")


def test_widen_rejects_narrower():
    model = SmallCNN(embedding_dim=4)
    with pytest.raises(ValueError, match="new_width must exceed the current width 4"):
        widen(model, "penultimate", new_width=4, example_input=torch.rand(2, 1, 28, 28))


class Normed(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.norm = nn.LayerNorm(4)
        self.b = nn.Linear(4, 2)

    def forward(self, x):
        return self.b(self.norm(self.a(x)))


def test_widen_rejects_non_elementwise_between():
    with pytest.raises(ValueError, match="'norm' \\(LayerNorm\\) runs between"):
        find_consumer(Normed(), "a", torch.rand(2, 3))


def test_resolve_and_width():
    model = SmallCNN(embedding_dim=12)
    assert resolve_widenable(model, "penultimate") == "penultimate.0"
    assert layer_width(model, "penultimate") == 12
    with pytest.raises(ValueError, match="contains no Linear or Conv2d"):
        resolve_widenable(nn.Sequential(nn.Sequential(nn.ReLU())), "0")
