"""BERT: a post-LN Transformer encoder, with masked-LM and classification heads.

    input ids [B, T], token types [B, T]
      -> word + position + token-type embeddings, LayerNorm, dropout     [B, T, C]
      -> n layers of post-LN blocks: ln_1(x + attn(x)), then ln_2(x + mlp(x))
         (bidirectional self-attention over non-padding keys, MLP C -> I -> C with GELU)
      = hidden states                                                     [B, T, C]
    pooler:      tanh(dense(hidden[:, 0]))                                 [B, C]
    masked LM:   dense -> GELU -> LayerNorm -> @ word_embeddings^T + bias  [B, T, vocab]
    classifier:  dropout(pooled) -> Linear(C, num_labels)                  [B, num_labels]

The module names differ from Hugging Face's; `_hf_mapping` pairs them up (HF stores the
query, key and value projections separately; here they are one fused [3C, C] matrix).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import functional as F
from .. import nn, ops
from ..autograd import Tensor, data_of, no_grad
from ..nn.attention import padding_mask
from .hf import CheckpointError, Dim, Layers, Option, WeightMap, load_mapped, read_config, save_mapped
from .output import ModelOutput

_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}


# What BERT implements of a Hugging Face BERT config.json (see minilm.models.hf.read_config).
BERT_OPTIONS = {
    "vocab_size": Option("int"), "hidden_size": Option("int"), "num_hidden_layers": Option("int"),
    "num_attention_heads": Option("int"), "intermediate_size": Option("int"),
    "max_position_embeddings": Option("int"), "type_vocab_size": Option("int"),
    "hidden_act": Option(allowed=tuple(_ACTIVATIONS)), "hidden_dropout_prob": Option("float"),
    "attention_probs_dropout_prob": Option("float"), "layer_norm_eps": Option("float"),
    "position_embedding_type": Option(allowed=("absolute",)), "is_decoder": Option(allowed=(False,)),
    "add_cross_attention": Option(allowed=(False,)), "pruned_heads": Option(allowed=({},)),
    "chunk_size_feed_forward": Option("any"),  # chunking changes memory use, not the result
    "tie_word_embeddings": Option(allowed=(True,)), "pad_token_id": Option("count"),
}
BERT_SIZES = {"num_hidden_layers": Layers("layer.{}."), "hidden_size": Dim("word_embeddings.weight", 1),
              "vocab_size": Dim("word_embeddings.weight", 0),
              "max_position_embeddings": Dim("position_embeddings.weight", 0),
              "type_vocab_size": Dim("token_type_embeddings.weight", 0),
              "intermediate_size": Dim("intermediate.dense.weight", 0)}
BERT_REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


def read_bert_config(folder) -> "BertConfig":
    """The BertConfig of a Hugging Face folder, checked against what minilm implements and the weights."""
    hf = read_config(folder, options=BERT_OPTIONS, sizes=BERT_SIZES, required=BERT_REQUIRED)
    try:
        config = BertConfig.from_hf(hf)
    except (TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(f"{Path(folder) / 'config.json'}: {error}") from None
    if config.pad_token_id >= config.vocab_size:
        raise CheckpointError(f"{Path(folder) / 'config.json'}: pad_token_id {config.pad_token_id} is not below "
                              f"vocab_size {config.vocab_size}")
    return config


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    num_labels: int = 2
    id2label: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"BertConfig: hidden_size {self.hidden_size} is not divisible by "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"BertConfig: unsupported hidden_act {self.hidden_act!r}; "
                             f"expected one of {sorted(_ACTIVATIONS)}")

    @classmethod
    def from_hf(cls, hf: dict) -> "BertConfig":
        known = {k: hf[k] for k in cls.__dataclass_fields__ if k in hf}
        if "id2label" in hf:
            known["id2label"] = {int(k): v for k, v in hf["id2label"].items()}
            known["num_labels"] = len(known["id2label"])
        return cls(**known)

    def to_hf(self, architecture: str) -> dict:
        config = asdict(self)
        config.pop("num_labels")
        id2label = self.id2label or {i: f"LABEL_{i}" for i in range(self.num_labels)}
        config["id2label"] = {str(k): v for k, v in id2label.items()}
        config["label2id"] = {v: int(k) for k, v in config["id2label"].items()}
        config.update(model_type="bert", architectures=[architecture], position_embedding_type="absolute")
        return config


class BertEmbeddings(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.word = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.drop = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, ids, token_type_ids, inputs_embeds: Tensor | None = None, tokens=None) -> Tensor:
        """[B, T, C]; or, given `tokens` (a boolean [B, T] mask of the real tokens), only those
        rows, packed [N, C]. inputs_embeds [B, T, C], when given, replaces the word vectors."""
        xp = self.word.weight.device.xp
        positions = xp.arange(token_type_ids.shape[1])[None, :]  # [1, T]
        if tokens is not None:  # look up the N real tokens only
            positions = xp.broadcast_to(positions, tokens.shape)[tokens]  # [N]
            token_type_ids = token_type_ids[tokens]
            ids = None if ids is None else ids[tokens]
            inputs_embeds = None if inputs_embeds is None else ops.getitem(inputs_embeds, tokens)
        words = self.word(ids) if inputs_embeds is None else inputs_embeds  # [B, T, C] or [N, C]
        x = words + self.position(positions) + self.token_type(token_type_ids)
        return self.drop(self.norm(x))


class BertModel(nn.Module):
    """The encoder. forward(...) -> hidden states [B, T, C]; `pool(hidden)` -> [B, C]."""

    def __init__(self, config: BertConfig, add_pooler: bool = True):
        super().__init__()
        self.config = c = config
        self.embeddings = BertEmbeddings(c)
        self.layers = nn.ModuleList(
            nn.TransformerBlock(c.hidden_size, c.num_attention_heads, c.intermediate_size,
                                dropout=c.hidden_dropout_prob, norm_first=False,
                                activation=_ACTIVATIONS[c.hidden_act], causal=False, layer_norm_eps=c.layer_norm_eps)
            for _ in range(c.num_hidden_layers)
        )
        for layer in self.layers:  # BERT's attention dropout has its own probability
            layer.attn.dropout = c.attention_probs_dropout_prob
        self.pooler = nn.Linear(c.hidden_size, c.hidden_size) if add_pooler else None
        self.apply(_bert_init)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, return_pooled: bool = False,
                inputs_embeds: Tensor | None = None, output_attentions: bool = False, skip_padding: bool = False):
        """input_ids [B, T]; attention_mask [B, T] (1 = token, 0 = padding); token_type_ids [B, T].

        Returns the last hidden states [B, T, C], or (hidden, pooled [B, C]) with return_pooled.
        inputs_embeds [B, T, C]: word vectors to use instead of looking up input_ids, e.g. a
        leaf tensor to differentiate with respect to (gradient attributions).
        output_attentions: also return every layer's attention weights, a list of
        [B, H, T, T] tensors, as the last element of the result.
        skip_padding: compute the real tokens only (needs attention_mask). Everything but
        attention works token by token (embeddings, every Linear, GELU, LayerNorm, dropout),
        so it runs on the N real tokens packed into [N, C] rows; attention alone sees the
        padded [B, T] layout. A batch padded to its longest text does much less work; the
        real tokens' states are the same, and padding positions come back as zeros.
        """
        device = self.embeddings.word.weight.device
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("BertModel.forward needs exactly one of input_ids and inputs_embeds")
        if inputs_embeds is not None:
            if inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != self.config.hidden_size:
                raise ValueError(f"inputs_embeds must have shape [B, T, {self.config.hidden_size}], "
                                 f"got {inputs_embeds.shape}")
            ids = None
            shape = inputs_embeds.shape[:2]
        else:
            ids = data_of(input_ids, device)
            if ids.ndim != 2:
                raise ValueError(f"BERT expects input_ids of shape [B, T], got {ids.shape}")
            shape = ids.shape
        batch, length = shape
        if length > self.config.max_position_embeddings:
            raise ValueError(f"sequence of {length} tokens is longer than max_position_embeddings "
                             f"({self.config.max_position_embeddings})")
        if token_type_ids is None:
            token_types = device.xp.zeros(shape, dtype=np.int64)
        else:
            token_types = data_of(token_type_ids, device)
        if token_types.shape != shape:
            raise ValueError(f"token_type_ids has shape {token_types.shape}, expected {shape}")
        key_padding = None
        if attention_mask is not None:
            key_padding = padding_mask(attention_mask, shape, self.embeddings.word.weight.dtype, device)  # [B, T]
        tokens = None  # with skip_padding: which of the [B, T] positions are real tokens
        if skip_padding:
            if attention_mask is None:
                raise ValueError("BertModel.forward: skip_padding needs the attention_mask that marks the padding")
            tokens = data_of(attention_mask, device).astype(bool)  # [B, T]

        x = self.embeddings(ids, token_types, inputs_embeds, tokens=tokens)  # [B, T, C] (packed: [N, C])
        attentions = []
        for layer in self.layers:
            if output_attentions:
                x, weights = layer(x, key_padding_mask=key_padding, need_weights=True, tokens=tokens)
                attentions.append(weights)  # [B, H, T, T]
            else:
                x = layer(x, key_padding_mask=key_padding, tokens=tokens)  # [B, T, C] (packed: [N, C])
        if tokens is not None:
            x = ops.unpack_rows(x, tokens)  # [N, C] -> [B, T, C], zeros at padding
        results = (x, self.pool(x)) if return_pooled else (x,)
        if output_attentions:
            results += (attentions,)
        return results[0] if len(results) == 1 else results

    def pool(self, hidden: Tensor) -> Tensor:
        """BERT's pooled output: tanh(dense(hidden state of [CLS]))  [B, T, C] -> [B, C]."""
        if self.pooler is None:
            raise ValueError("this BertModel was built without a pooler")
        return ops.tanh(self.pooler(hidden[:, 0]))

    # -- Hugging Face layout -------------------------------------------------------------------
    def _hf_mapping(self) -> list[WeightMap]:
        maps = [
            WeightMap("embeddings.word.weight", "embeddings.word_embeddings.weight"),
            WeightMap("embeddings.position.weight", "embeddings.position_embeddings.weight"),
            WeightMap("embeddings.token_type.weight", "embeddings.token_type_embeddings.weight"),
            WeightMap("embeddings.norm.weight", "embeddings.LayerNorm.weight"),
            WeightMap("embeddings.norm.bias", "embeddings.LayerNorm.bias"),
        ]
        for i in range(self.config.num_hidden_layers):
            ours, theirs = f"layers.{i}.", f"encoder.layer.{i}."
            attention = theirs + "attention.self."
            for kind in ("weight", "bias"):
                maps += [
                    WeightMap(ours + f"attn.in_proj.{kind}",
                              tuple(attention + f"{part}.{kind}" for part in ("query", "key", "value"))),
                    WeightMap(ours + f"attn.out_proj.{kind}", theirs + f"attention.output.dense.{kind}"),
                    WeightMap(ours + f"ln_1.{kind}", theirs + f"attention.output.LayerNorm.{kind}"),
                    WeightMap(ours + f"mlp.fc.{kind}", theirs + f"intermediate.dense.{kind}"),
                    WeightMap(ours + f"mlp.proj.{kind}", theirs + f"output.dense.{kind}"),
                    WeightMap(ours + f"ln_2.{kind}", theirs + f"output.LayerNorm.{kind}"),
                ]
        if self.pooler is not None:
            maps += [WeightMap("pooler.weight", "pooler.dense.weight"), WeightMap("pooler.bias", "pooler.dense.bias")]
        return maps

    @classmethod
    def from_pretrained(cls, folder) -> "BertModel":
        """Load a Hugging Face BERT folder (config.json + model.safetensors), e.g. all-MiniLM-L6-v2."""
        model = cls(read_bert_config(folder))
        load_mapped(model, folder, model._hf_mapping(), prefixes=("", "bert."))
        return model.eval()

    def save_pretrained(self, folder) -> None:
        save_mapped(self, folder, self._hf_mapping(), self.config.to_hf("BertModel"))


class BertForMaskedLM(nn.Module):
    """BERT with the masked-LM head; the decoder is tied to the word embeddings."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = c = config
        self.bert = BertModel(c, add_pooler=False)
        self.transform = nn.Linear(c.hidden_size, c.hidden_size)
        self.act = nn.GELU("tanh" if _ACTIVATIONS[c.hidden_act] == "gelu_tanh" else "none")
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        weight = self.transform.weight
        self.decoder_bias = nn.Parameter(weight.device.xp.zeros(c.vocab_size, dtype=weight.dtype))
        self.transform.apply(_bert_init)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        """A ModelOutput: logits [B, T, vocab], and the loss with `labels` [B, T] (-100 = not masked)."""
        hidden = self.bert(input_ids, attention_mask, token_type_ids)  # [B, T, C]
        h = self.norm(self.act(self.transform(hidden)))  # [B, T, C]
        logits = F.linear(h, self.bert.embeddings.word.weight, self.decoder_bias)  # [B, T, V]
        if labels is None:
            return ModelOutput(logits)
        loss = F.cross_entropy(ops.reshape(logits, (-1, logits.shape[-1])), data_of(labels, logits.device).reshape(-1))
        return ModelOutput(logits, loss)

    def _hf_mapping(self) -> list[WeightMap]:
        maps = [m.prefixed("bert.", "bert.") for m in self.bert._hf_mapping()]
        head = "cls.predictions."
        return maps + [
            WeightMap("transform.weight", head + "transform.dense.weight"),
            WeightMap("transform.bias", head + "transform.dense.bias"),
            WeightMap("norm.weight", head + "transform.LayerNorm.weight"),
            WeightMap("norm.bias", head + "transform.LayerNorm.bias"),
            WeightMap("decoder_bias", head + "bias"),
        ]

    @classmethod
    def from_pretrained(cls, folder) -> "BertForMaskedLM":
        model = cls(read_bert_config(folder))
        load_mapped(model, folder, model._hf_mapping())
        return model.eval()

    def save_pretrained(self, folder) -> None:
        save_mapped(self, folder, self._hf_mapping(), self.config.to_hf("BertForMaskedLM"))


class BertForSequenceClassification(nn.Module):
    """BERT + dropout + a linear classifier on the pooled [CLS] output."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = c = config
        self.bert = BertModel(c, add_pooler=True)
        self.drop = nn.Dropout(c.hidden_dropout_prob)
        self.classifier = nn.Linear(c.hidden_size, c.num_labels)
        self.classifier.apply(_bert_init)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None,
                inputs_embeds: Tensor | None = None, skip_padding: bool = False):
        """A ModelOutput: logits [B, num_labels], and the loss with integer `labels` [B].

        inputs_embeds [B, T, C] replaces the word vectors of input_ids (see BertModel.forward).
        skip_padding: compute the real tokens only (BertModel.forward); the [CLS] token the
        classifier reads must then be a real one (right padding, as WordPieceTokenizer pads).
        """
        _, pooled = self.bert(input_ids, attention_mask, token_type_ids, return_pooled=True,
                              inputs_embeds=inputs_embeds, skip_padding=skip_padding)  # [B, C]
        logits = self.classifier(self.drop(pooled))  # [B, num_labels]
        if labels is None:
            return ModelOutput(logits)
        return ModelOutput(logits, F.cross_entropy(logits, data_of(labels, logits.device)))

    def _hf_mapping(self) -> list[WeightMap]:
        maps = [m.prefixed("bert.", "bert.") for m in self.bert._hf_mapping()]
        return maps + [WeightMap("classifier.weight", "classifier.weight"),
                       WeightMap("classifier.bias", "classifier.bias")]

    @classmethod
    def from_pretrained(cls, folder, num_labels: int | None = None) -> "BertForSequenceClassification":
        """Load a fine-tuned classifier, or (num_labels given, no classifier in the file) a
        pretrained encoder with a freshly initialised classifier to fine-tune."""
        config = read_bert_config(folder)
        if num_labels is not None:
            config.num_labels, config.id2label = num_labels, {}
        model = cls(config)
        bert_maps = [m.prefixed("bert.") for m in model.bert._hf_mapping()]
        load_mapped(model, folder, bert_maps, prefixes=("bert.", ""))
        try:
            load_mapped(model, folder, [WeightMap("classifier.weight", "classifier.weight"),
                                        WeightMap("classifier.bias", "classifier.bias")])
        except ValueError:
            if num_labels is None:
                raise
        return model.eval()

    def save_pretrained(self, folder) -> None:
        save_mapped(self, folder, self._hf_mapping(), self.config.to_hf("BertForSequenceClassification"))


def mean_pooling(hidden: Tensor, attention_mask) -> Tensor:
    """Average of the token vectors where attention_mask is 1: [B, T, C] -> [B, C]."""
    mask = Tensor(data_of(attention_mask, hidden.device).astype(hidden.dtype)[:, :, None])  # [B, T, 1]
    total = (hidden * mask).sum(axis=1)  # [B, C]
    count = ops.clip(mask.sum(axis=1), 1e-9, None)  # [B, 1]
    return total / count


def l2_normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """x / max(||x||, eps) along the last axis."""
    norm = ops.sqrt((x * x).sum(axis=-1, keepdims=True))
    return x / ops.clip(norm, eps, None)


def sentence_embeddings(model: BertModel, tokenizer, texts, max_length: int = 256,
                        batch_size: int | None = 32) -> Tensor:
    """Sentence vectors the way all-MiniLM-L6-v2 is used: mean pooling + L2 normalization.

    `tokenizer` is a WordPieceTokenizer; returns [len(texts), C] unit vectors in the order of
    `texts` (one string: [1, C]). The texts are sorted by length and run in batches of
    `batch_size`, each padded to its own longest, and the model skips the padding
    (`BertModel.forward(skip_padding=True)`): only attention sees the padded layout. Padding
    leaves the vectors unchanged. batch_size=None: one batch of all.
    """
    from ..seq2seq_data import pad_right

    texts = [texts] if isinstance(texts, str) else list(texts)  # one text is a batch of one, not its characters
    if not texts:
        raise ValueError("sentence_embeddings: no texts given")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"sentence_embeddings: batch_size must be at least 1 (or None), got {batch_size}")
    encoded = tokenizer(texts, truncation=True, max_length=max_length)  # each text once, unpadded
    ids, types = encoded["input_ids"], encoded["token_type_ids"]
    order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
    size = batch_size or len(texts)
    vectors = None
    with no_grad():
        for start in range(0, len(order), size):
            rows = order[start : start + size]
            batch_ids, mask = pad_right([ids[i] for i in rows], tokenizer.pad_token_id)  # [n, T]
            batch_types, _ = pad_right([types[i] for i in rows], 0)
            hidden = model(batch_ids, mask, batch_types, skip_padding=not mask.all())  # [n, T, C], zeros at padding
            pooled = l2_normalize(mean_pooling(hidden, mask)).data  # [n, C]
            xp = ops._xp(pooled)
            if vectors is None:
                vectors = xp.empty((len(texts), pooled.shape[1]), dtype=pooled.dtype)
            vectors[xp.asarray(rows)] = pooled  # back to the texts' order
    return Tensor(vectors)


def _bert_init(module) -> None:
    """BERT's initialisation: N(0, 0.02) weights, zero biases, LayerNorm 1/0."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with no_grad():
                module.weight[module.padding_idx] = 0.0
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)

