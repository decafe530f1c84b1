"""The encoder-decoder Transformer of "Attention Is All You Need", exact with Hugging Face's
BART and Marian (opus-mt) checkpoints.

    source ids [B, S]                                target ids [B, T] (start token first)
      -> token embedding (* sqrt(C) if scaled)         -> token embedding (shared or its own)
         + positions (sinusoidal or learned)              + positions
         -> LayerNorm (if layernorm_embedding)            -> LayerNorm (if layernorm_embedding)
      -> encoder layers, post-LN:                      -> decoder layers, post-LN:
           x = ln(x + self_attn(x))                         x = ln(x + causal_self_attn(x))
           x = ln(x + ffn(x))                               x = ln(x + cross_attn(x, memory))
      = encoder output, the memory [B, S, C]  ---->         x = ln(x + ffn(x))
                                                       -> logits = x @ E^T + final_logits_bias  [B, T, V]

The two published variants differ only in their options (`TransformerConfig.bart()` and
`.marian()`): BART learns its positions (its table has 2 extra rows in front, so position p
reads row p + 2), normalises the embeddings and uses GELU with unscaled embeddings; Marian
adds fixed sinusoids (sin of every frequency in the first half of the channels, cos in the
second), scales the token vectors by sqrt(C) and uses swish (SiLU).

Generation (`model.generate(src_ids, ...)`) runs the encoder once, projects the memory to
each layer's cross-attention keys and values once, and then feeds the decoder one token at
a time through its self-attention KV cache; the loops are minilm.generation's.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from .. import functional as F
from .. import nn, ops
from ..autograd import Tensor, data_of, get_default_dtype
from ..generation import generate, generate_stream, last_logits
from ..nn.attention import padding_mask
from .gpt import gpt2_init_
from .hf import (
    CheckpointError,
    Dim,
    Layers,
    WeightMap,
    check_sizes,
    load_mapped,
    read_config,
    read_shapes,
    save_mapped,
    write_config,
)
from .output import ModelOutput

_ACTIVATIONS = {  # Hugging Face's names for the feed-forward activation
    "gelu": lambda: nn.GELU("none"), "gelu_new": lambda: nn.GELU("tanh"),
    "gelu_pytorch_tanh": lambda: nn.GELU("tanh"), "relu": nn.ReLU, "swish": nn.SiLU, "silu": nn.SiLU,
}
_POSITIONS = ("sinusoidal", "learned")


@dataclass
class TransformerConfig:
    vocab_size: int = 8000  # source vocabulary (and target, when the embeddings are shared)
    d_model: int = 256
    encoder_layers: int = 3
    decoder_layers: int = 3
    encoder_attention_heads: int = 4
    decoder_attention_heads: int = 4
    encoder_ffn_dim: int = 1024
    decoder_ffn_dim: int = 1024
    max_position_embeddings: int = 512  # the longest source, and the longest target
    position_embedding: str = "sinusoidal"  # "sinusoidal" (Marian, the paper) or "learned" (BART)
    position_offset: int = 0  # rows of the learned table before position 0 (BART: 2)
    scale_embedding: bool = True  # token vectors * sqrt(d_model)
    layernorm_embedding: bool = False  # a LayerNorm after token + position vectors (BART)
    activation: str = "swish"  # gelu | gelu_new | relu | swish (= silu)
    dropout: float = 0.1  # on embeddings and on every sublayer's output
    attention_dropout: float = 0.0  # on the attention probabilities
    activation_dropout: float = 0.0  # inside the feed-forward, after the activation
    layer_norm_eps: float = 1e-5
    init_std: float = 0.02
    share_embeddings: bool = True  # the encoder and decoder read one token table
    decoder_vocab_size: int | None = None  # a separate target vocabulary (share_embeddings=False)
    tie_word_embeddings: bool = True  # the output projection is the decoder's token table
    pad_token_id: int = 0
    bos_token_id: int | None = None
    eos_token_id: int = 2
    decoder_start_token_id: int = 0  # the first decoder input (Marian: pad; BART: eos)
    forced_bos_token_id: int | None = None  # generation: the first generated token, when set
    forced_eos_token_id: int | None = None  # generation: the last token at the length limit
    bad_words_ids: list | None = None  # generation: token sequences never generated (Marian: [[pad]])

    def __post_init__(self):
        if self.decoder_vocab_size is None:
            self.decoder_vocab_size = self.vocab_size
        for name in ("vocab_size", "decoder_vocab_size", "d_model", "encoder_layers", "decoder_layers",
                     "encoder_attention_heads", "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim",
                     "max_position_embeddings"):
            if getattr(self, name) < 1:
                raise ValueError(f"TransformerConfig.{name} must be positive, got {getattr(self, name)}")
        for name in ("encoder_attention_heads", "decoder_attention_heads"):
            if self.d_model % getattr(self, name):
                raise ValueError(f"TransformerConfig: d_model {self.d_model} is not divisible by {name} "
                                 f"{getattr(self, name)}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"TransformerConfig.activation {self.activation!r} is not implemented; "
                             f"expected one of {sorted(_ACTIVATIONS)}")
        if self.position_embedding not in _POSITIONS:
            raise ValueError(f"TransformerConfig.position_embedding {self.position_embedding!r} is not implemented; "
                             f"expected one of {_POSITIONS}")
        if self.position_offset < 0 or (self.position_offset and self.position_embedding != "learned"):
            raise ValueError(f"TransformerConfig.position_offset {self.position_offset}: an offset applies to "
                             "learned positions only, and must be >= 0")
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"TransformerConfig.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.share_embeddings and self.decoder_vocab_size != self.vocab_size:
            raise ValueError(f"TransformerConfig: shared embeddings need one vocabulary, but vocab_size is "
                             f"{self.vocab_size} and decoder_vocab_size {self.decoder_vocab_size}")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id",
                     "forced_bos_token_id", "forced_eos_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.decoder_vocab_size:
                raise ValueError(f"TransformerConfig.{name} {value} is outside the target vocabulary "
                                 f"of {self.decoder_vocab_size}")
        for word in self.bad_words_ids or ():
            if not word or not all(0 <= t < self.decoder_vocab_size for t in word):
                raise ValueError(f"TransformerConfig.bad_words_ids: {word} is not a non-empty list of target "
                                 f"token ids (vocabulary {self.decoder_vocab_size})")

    @classmethod
    def bart(cls, **overrides) -> "TransformerConfig":
        """BART's options: learned positions (offset 2), layernorm_embedding, GELU, unscaled
        embeddings; its special ids (bos 0, pad 1, eos 2, decoder start = eos)."""
        options = dict(position_embedding="learned", position_offset=2, layernorm_embedding=True, activation="gelu",
                       scale_embedding=False, bos_token_id=0, pad_token_id=1, eos_token_id=2,
                       decoder_start_token_id=2, forced_eos_token_id=2)
        return cls(**{**options, **overrides})

    @classmethod
    def marian(cls, **overrides) -> "TransformerConfig":
        """The original Transformer as Marian runs it: sinusoidal positions, scaled
        embeddings, swish, and the decoder starting from the pad token."""
        options = dict(position_embedding="sinusoidal", position_offset=0, layernorm_embedding=False,
                       activation="swish", scale_embedding=True)
        merged = {**options, **overrides}
        merged.setdefault("decoder_start_token_id", merged.get("pad_token_id", 0))
        return cls(**merged)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TransformerConfig":
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"TransformerConfig: unknown options {unknown}")
        return cls(**values)

    # -- Hugging Face config.json ---------------------------------------------------------
    @classmethod
    def from_hf(cls, hf: dict, source: str = "config.json") -> "TransformerConfig":
        """The options of a BART or Marian config.json; anything minilm does not implement
        is an error that names it."""
        kind = hf.get("model_type")
        if kind not in _HF_KINDS:
            raise CheckpointError(f"{source}: model_type {kind!r} is not an encoder-decoder Transformer minilm "
                                  f"reads (expected one of {sorted(_HF_KINDS)}; architectures: "
                                  f"{hf.get('architectures')})")
        activation = hf.get("activation_function", "gelu")
        if activation not in _ACTIVATIONS:
            raise CheckpointError(f"{source}: activation_function {activation!r} is not implemented "
                                  f"(minilm has {sorted(_ACTIVATIONS)})")
        for name in ("encoder_layerdrop", "decoder_layerdrop"):
            if hf.get(name, 0.0):
                raise CheckpointError(f"{source}: {name}={hf[name]} (LayerDrop) is not implemented; set it to 0.0")
        for name, wanted in (("normalize_before", False), ("add_final_layer_norm", False)):
            if hf.get(name, wanted) != wanted:
                raise CheckpointError(f"{source}: {name}={hf[name]} (pre-LN, as mBART) is not implemented; "
                                      "minilm's Transformer is post-LN as BART and Marian")
        shared = hf.get("share_encoder_decoder_embeddings", True)
        eos = hf.get("eos_token_id", 2)
        if isinstance(eos, list):
            raise CheckpointError(f"{source}: several eos_token_id values {eos} are not implemented")
        options = dict(
            vocab_size=hf["vocab_size"], decoder_vocab_size=hf.get("decoder_vocab_size") or hf["vocab_size"],
            d_model=hf["d_model"], encoder_layers=hf["encoder_layers"], decoder_layers=hf["decoder_layers"],
            encoder_attention_heads=hf["encoder_attention_heads"],
            decoder_attention_heads=hf["decoder_attention_heads"],
            encoder_ffn_dim=hf["encoder_ffn_dim"], decoder_ffn_dim=hf["decoder_ffn_dim"],
            max_position_embeddings=hf["max_position_embeddings"], scale_embedding=hf.get("scale_embedding", False),
            activation=activation, dropout=hf.get("dropout", 0.1), attention_dropout=hf.get("attention_dropout", 0.0),
            activation_dropout=hf.get("activation_dropout", 0.0), init_std=hf.get("init_std", 0.02),
            share_embeddings=shared, tie_word_embeddings=hf.get("tie_word_embeddings", True),
            pad_token_id=hf.get("pad_token_id", 1), bos_token_id=hf.get("bos_token_id"), eos_token_id=eos,
            decoder_start_token_id=hf.get("decoder_start_token_id", eos),
            forced_bos_token_id=hf.get("forced_bos_token_id"), forced_eos_token_id=hf.get("forced_eos_token_id"),
            bad_words_ids=hf.get("bad_words_ids"),
        )
        return cls(**options, **_HF_KINDS[kind])

    def to_hf(self) -> dict:
        """config.json for transformers' BartForConditionalGeneration or MarianMTModel."""
        kind = next((k for k, v in _HF_KINDS.items()
                     if all(getattr(self, name) == value for name, value in v.items())), None)
        if kind is None:
            raise ValueError("save_pretrained: this configuration is neither BART's (learned positions with "
                             "offset 2, layernorm_embedding) nor Marian's (sinusoidal positions, no embedding "
                             "LayerNorm); transformers has no model for it")
        if self.layer_norm_eps != 1e-5:
            raise ValueError(f"save_pretrained: layer_norm_eps {self.layer_norm_eps}; BART and Marian use 1e-5")
        config = {
            "model_type": kind, "architectures": [_HF_ARCHITECTURES[kind]], "is_encoder_decoder": True,
            "vocab_size": self.vocab_size, "d_model": self.d_model,
            "encoder_layers": self.encoder_layers, "decoder_layers": self.decoder_layers,
            "encoder_attention_heads": self.encoder_attention_heads,
            "decoder_attention_heads": self.decoder_attention_heads,
            "encoder_ffn_dim": self.encoder_ffn_dim, "decoder_ffn_dim": self.decoder_ffn_dim,
            "max_position_embeddings": self.max_position_embeddings, "scale_embedding": self.scale_embedding,
            "activation_function": self.activation, "dropout": self.dropout,
            "attention_dropout": self.attention_dropout, "activation_dropout": self.activation_dropout,
            "encoder_layerdrop": 0.0, "decoder_layerdrop": 0.0, "init_std": self.init_std,
            "tie_word_embeddings": self.tie_word_embeddings, "pad_token_id": self.pad_token_id,
            "bos_token_id": self.bos_token_id, "eos_token_id": self.eos_token_id,
            "decoder_start_token_id": self.decoder_start_token_id,
            "forced_bos_token_id": self.forced_bos_token_id, "forced_eos_token_id": self.forced_eos_token_id,
            "bad_words_ids": self.bad_words_ids,
        }
        if kind == "marian":
            config.update(share_encoder_decoder_embeddings=self.share_embeddings,
                          decoder_vocab_size=self.decoder_vocab_size)
        elif not self.share_embeddings:
            raise ValueError("save_pretrained: BART always shares its encoder and decoder embeddings; "
                             "this model was built with share_embeddings=False")
        return config


# What each Hugging Face model type fixes in the configuration.
_HF_KINDS = {
    "bart": dict(position_embedding="learned", position_offset=2, layernorm_embedding=True),
    "marian": dict(position_embedding="sinusoidal", position_offset=0, layernorm_embedding=False),
}
_HF_ARCHITECTURES = {"bart": "BartForConditionalGeneration", "marian": "MarianMTModel"}


# ---------------------------------------------------------------------------------------
# Positions
# ---------------------------------------------------------------------------------------
def sinusoid_table(num_positions: int, dim: int) -> np.ndarray:
    """Marian's fixed position vectors [P, C]: for frequency k (k = 0, 1, ...) the angle
    p / 10000^(2k / C); the sines of all frequencies fill the first half of the channels
    (ceil(C / 2) of them), the cosines the second half."""
    positions = np.arange(num_positions, dtype=np.float64)[:, None]  # [P, 1]
    sin_k, cos_k = np.arange((dim + 1) // 2), np.arange(dim // 2)
    sines = np.sin(positions / np.power(10000, 2 * sin_k / dim))  # [P, ceil(C/2)]
    cosines = np.cos(positions / np.power(10000, 2 * cos_k / dim))  # [P, C//2]
    # Rounded to float32 as Marian's tables always are, so float64 models match them exactly too.
    return np.concatenate([sines, cosines], axis=1).astype(np.float32)  # [P, C]


class SinusoidalPositions(nn.Module):
    """Fixed position vectors: a buffer, not trained and not saved (rebuilt from the formula)."""

    def __init__(self, num_positions: int, dim: int):
        super().__init__()
        from .. import tensor

        self.register_buffer("table", tensor(sinusoid_table(num_positions, dim), dtype=get_default_dtype()),
                             persistent=False)

    def forward(self, positions) -> Tensor:
        return ops.getitem(self.table, positions)  # [T] -> [T, C]


class LearnedPositions(nn.Embedding):
    """A trained table [P + offset, C]; position p reads row p + offset (BART's offset is 2)."""

    def __init__(self, num_positions: int, dim: int, offset: int):
        super().__init__(num_positions + offset, dim)
        self.offset = offset

    def forward(self, positions) -> Tensor:
        return super().forward(positions + self.offset)  # [T] -> [T, C]


# ---------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------
class FeedForward(nn.Module):
    """Linear(C, F) -> activation -> dropout -> Linear(F, C), position by position."""

    def __init__(self, d_model: int, ffn_dim: int, activation: str, activation_dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(d_model, ffn_dim)
        self.act = _ACTIVATIONS[activation]()
        self.drop = nn.Dropout(activation_dropout)
        self.fc2 = nn.Linear(ffn_dim, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))  # [B, T, C] -> [B, T, F] -> [B, T, C]


class CrossAttention(nn.MultiHeadAttention):
    """Attention from the decoder's positions to the encoder output (the memory).

    Split in two so that generation can project the memory once per sequence:
    `memory_keys_values(memory)` gives the keys and values, `attend(x, keys, values)` the
    output. The parameters are MultiHeadAttention's (in_proj rows [W_q; W_k; W_v], out_proj).
    """

    def memory_keys_values(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        c = self.embed_dim
        weight, bias = self.in_proj.weight, self.in_proj.bias
        kv = F.linear(memory, weight[c:], bias[c:])  # [B, S, C] -> [B, S, 2C]: keys and values in one GEMM
        return F.split_heads(kv, self.num_heads, parts=2)  # -> 2 x [B, H, S, D]

    def attend(self, x: Tensor, keys: Tensor, values: Tensor, key_padding_mask=None, need_weights: bool = False):
        c = self.embed_dim
        batch, length, _ = x.shape
        q = F.linear(x, self.in_proj.weight[:c], self.in_proj.bias[:c])  # [B, T, C]
        q = F.split_heads(q, self.num_heads)[0]  # [B, T, C] -> [B, H, T, D]
        mask = self._combined_mask(batch, length, keys.shape[2], key_padding_mask, None, False, q)  # [B, 1, 1, S]
        result = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, dropout_p=self.dropout,
                                                training=self.training, return_weights=need_weights)  # [B, H, T, D]
        out, weights = result if need_weights else (result, None)
        return self.out_proj(F.merge_heads(out)), weights  # [B, H, T, D] -> [B, T, C]; weights [B, H, T, S]


class EncoderLayer(nn.Module):
    """Post-LN: x = ln(x + self_attn(x)); x = ln(x + ffn(x)), dropout on each sublayer's output."""

    def __init__(self, c: TransformerConfig):
        super().__init__()
        self.self_attn = nn.MultiHeadAttention(c.d_model, c.encoder_attention_heads, dropout=c.attention_dropout)
        self.self_attn_norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.ffn = FeedForward(c.d_model, c.encoder_ffn_dim, c.activation, c.activation_dropout)
        self.final_norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: Tensor, key_padding_mask=None) -> Tensor:
        attended, _ = self.self_attn(x, key_padding_mask=key_padding_mask)  # [B, S, C]
        x = self.self_attn_norm(x + self.drop(attended))  # [B, S, C]
        return self.final_norm(x + self.drop(self.ffn(x)))  # [B, S, C]


class DecoderLayer(nn.Module):
    """Post-LN: causal self-attention, then cross-attention to the memory, then the feed-forward."""

    def __init__(self, c: TransformerConfig):
        super().__init__()
        self.self_attn = nn.MultiHeadAttention(c.d_model, c.decoder_attention_heads, dropout=c.attention_dropout)
        self.self_attn_norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.cross_attn = CrossAttention(c.d_model, c.decoder_attention_heads, dropout=c.attention_dropout)
        self.cross_attn_norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.ffn = FeedForward(c.d_model, c.decoder_ffn_dim, c.activation, c.activation_dropout)
        self.final_norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: Tensor, memory_kv: tuple, memory_padding=None, self_padding=None,
                cache: nn.KVCache | None = None, need_weights: bool = False):
        """x [B, T, C]; memory_kv: this layer's cross-attention (keys, values), each [B, H, S, D]."""
        attended, _ = self.self_attn(x, key_padding_mask=self_padding, is_causal=True, cache=cache)  # [B, T, C]
        x = self.self_attn_norm(x + self.drop(attended))  # [B, T, C]
        attended, weights = self.cross_attn.attend(x, *memory_kv, key_padding_mask=memory_padding,
                                                   need_weights=need_weights)  # [B, T, C], [B, H, T, S]
        x = self.cross_attn_norm(x + self.drop(attended))  # [B, T, C]
        return self.final_norm(x + self.drop(self.ffn(x))), weights  # [B, T, C]


# ---------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------
class Transformer(nn.Module):
    """The encoder-decoder (see the module docstring). Parameter names: embed_tokens (and
    decoder_embed_tokens when not shared), encoder_/decoder_positions (learned ones),
    encoder_/decoder_embedding_norm, encoder_layers.i, decoder_layers.i, lm_head (untied);
    final_logits_bias is a buffer, as in BART and Marian."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = c = config
        self.embed_tokens = nn.Embedding(c.vocab_size, c.d_model, padding_idx=c.pad_token_id)  # source (and target)
        self.decoder_embed_tokens = (
            None if c.share_embeddings else nn.Embedding(c.decoder_vocab_size, c.d_model, padding_idx=c.pad_token_id))
        self.encoder_positions, self.decoder_positions = (self._positions(c) for _ in range(2))
        self.encoder_embedding_norm, self.decoder_embedding_norm = (
            nn.LayerNorm(c.d_model, eps=c.layer_norm_eps) if c.layernorm_embedding else None for _ in range(2))
        self.encoder_layers = nn.ModuleList(EncoderLayer(c) for _ in range(c.encoder_layers))
        self.decoder_layers = nn.ModuleList(DecoderLayer(c) for _ in range(c.decoder_layers))
        self.lm_head = None if c.tie_word_embeddings else nn.Linear(c.d_model, c.decoder_vocab_size, bias=False)
        from .. import zeros

        self.register_buffer("final_logits_bias", zeros(1, c.decoder_vocab_size, dtype=get_default_dtype()))  # [1, V]
        self.drop = nn.Dropout(c.dropout)
        self.embed_scale = math.sqrt(c.d_model) if c.scale_embedding else 1.0
        # generate's defaults that come with a checkpoint (num_beams, max_length, ...), as
        # transformers' GenerationConfig; what the caller passes wins.
        self.generation_defaults: dict = {}
        # BART's and Marian's initialisation: weights ~ N(0, init_std^2), biases 0, padding row 0.
        gpt2_init_(self, c.decoder_layers, std=c.init_std, residual_suffixes=())

    @staticmethod
    def _positions(c: TransformerConfig) -> nn.Module:
        if c.position_embedding == "learned":
            return LearnedPositions(c.max_position_embeddings, c.d_model, c.position_offset)
        return SinusoidalPositions(c.max_position_embeddings, c.d_model)

    @property
    def target_embeddings(self) -> nn.Embedding:
        return self.embed_tokens if self.decoder_embed_tokens is None else self.decoder_embed_tokens

    # -- the two halves -------------------------------------------------------------------
    def encode(self, src_ids, src_attention_mask=None) -> Tensor:
        """The encoder output (the memory) [B, S, C] for source ids [B, S].

        src_attention_mask [B, S]: 1 for tokens, 0 for padding (padded keys are ignored).
        """
        xp = self.embed_tokens.weight.device.xp
        ids = self._ids(src_ids, "src_ids")
        batch, length = ids.shape
        self._check_length(length, "source")
        padding = self._key_padding(src_attention_mask, (batch, length), "src_attention_mask", "src_ids")
        x = self.embed_tokens(ids) * self.embed_scale + self.encoder_positions(xp.arange(length))  # [B, S, C]
        if self.encoder_embedding_norm is not None:
            x = self.encoder_embedding_norm(x)
        x = self.drop(x)
        for layer in self.encoder_layers:
            x = layer(x, key_padding_mask=padding)  # [B, S, C]
        return x

    def memory_keys_values(self, encoder_hidden: Tensor) -> list:
        """Every decoder layer's cross-attention (keys, values) [B, H, S, D] of the memory:
        computed once per sequence, then reused at every decoding step."""
        return [layer.cross_attn.memory_keys_values(encoder_hidden) for layer in self.decoder_layers]

    def decode(self, tgt_ids, encoder_hidden: Tensor | None = None, src_attention_mask=None, tgt_attention_mask=None,
               caches=None, memory_kv=None, output_attentions: bool = False) -> ModelOutput:
        """Next-token logits [B, T, V] for target ids [B, T] given the memory.

        encoder_hidden [B, S, C]: `encode`'s output (or pass `memory_kv`, its projections
        from `memory_keys_values`, to skip recomputing them). src_attention_mask [B, S]
        masks padded memory positions. tgt_attention_mask [B, P+T]: 1 for tokens, 0 for
        padding. caches: one KVCache per decoder layer holding P earlier positions.
        output_attentions: `attentions` holds each layer's cross-attention weights [B, H, T, S].
        """
        xp = self.embed_tokens.weight.device.xp
        ids = self._ids(tgt_ids, "tgt_ids")
        batch, length = ids.shape
        past = len(caches[0]) if caches else 0
        self._check_length(past + length, "target")
        if memory_kv is None:
            if encoder_hidden is None:
                raise ValueError("decode needs the encoder output (encoder_hidden) or its projections (memory_kv)")
            memory_kv = self.memory_keys_values(encoder_hidden)
        source = memory_kv[0][0].shape[2]
        if memory_kv[0][0].shape[0] != batch:
            raise ValueError(f"decode: the memory holds {memory_kv[0][0].shape[0]} sequences, tgt_ids {batch}")
        memory_padding = self._key_padding(src_attention_mask, (batch, source), "src_attention_mask", "the source")
        self_padding = self._key_padding(tgt_attention_mask, (batch, past + length), "tgt_attention_mask",
                                         "tgt_ids (plus cached positions)")

        positions = self.decoder_positions(xp.arange(past, past + length))  # [T, C]
        x = self.target_embeddings(ids) * self.embed_scale + positions  # [B, T, C]
        if self.decoder_embedding_norm is not None:
            x = self.decoder_embedding_norm(x)
        x = self.drop(x)
        attentions = [] if output_attentions else None
        for i, layer in enumerate(self.decoder_layers):
            x, weights = layer(x, memory_kv[i], memory_padding, self_padding, caches[i] if caches else None,
                               need_weights=output_attentions)  # [B, T, C]
            if output_attentions:
                attentions.append(weights)  # [B, H, T, S]
        weight = self.target_embeddings.weight if self.lm_head is None else self.lm_head.weight  # [V, C]
        # Marian's and most BART checkpoints' final_logits_bias is all zeros: adding it would
        # be one more pass over the [B, T, V] logits, the step's largest array, for nothing.
        bias = ops.reshape(self.final_logits_bias, (-1,)) if self.final_logits_bias.data.any() else None  # [V]
        logits = F.linear(x, weight, bias)  # [B, T, C] @ [C, V] (+ [V], inside the GEMM's output) -> [B, T, V]
        return ModelOutput(logits, attentions=attentions)

    def forward(self, src_ids, tgt_ids=None, src_attention_mask=None, tgt_attention_mask=None, labels=None,
                label_smoothing: float = 0.0, output_attentions: bool = False) -> ModelOutput:
        """Logits [B, T, V] of every next target token; with `labels` [B, T], also the mean
        cross-entropy over the labels that are not -100 (label_smoothing as PyTorch's
        CrossEntropyLoss). Without tgt_ids the labels shifted right (start token first, -100
        read as pad) are the decoder input, as Hugging Face does."""
        if tgt_ids is None:
            if labels is None:
                raise ValueError("Transformer.forward needs tgt_ids (the decoder input) or labels")
            tgt_ids = self.shift_right(labels)
        encoder_hidden = self.encode(src_ids, src_attention_mask)  # [B, S, C]
        out = self.decode(tgt_ids, encoder_hidden, src_attention_mask, tgt_attention_mask,
                          output_attentions=output_attentions)
        if labels is not None:
            targets = data_of(labels, self.embed_tokens.weight.device)
            if targets.shape != out.logits.shape[:2]:
                raise ValueError(f"labels have shape {targets.shape}, expected {out.logits.shape[:2]} like tgt_ids")
            flat = ops.reshape(out.logits, (-1, out.logits.shape[-1]))  # [B*T, V]
            out.loss = F.cross_entropy(flat, targets.reshape(-1), label_smoothing=label_smoothing)
        return out

    def shift_right(self, labels) -> np.ndarray:
        """Decoder inputs from labels [B, T]: the start token, then labels[:, :-1]; -100 -> pad."""
        labels = np.asarray(labels.numpy() if isinstance(labels, Tensor) else labels)
        shifted = np.empty_like(labels)
        shifted[:, 0] = self.config.decoder_start_token_id
        shifted[:, 1:] = labels[:, :-1]
        return np.where(shifted == -100, self.config.pad_token_id, shifted)

    # -- input checks -----------------------------------------------------------------------
    def _ids(self, ids, name: str):
        ids = data_of(ids, self.embed_tokens.weight.device)
        if ids.ndim != 2 or ids.shape[1] == 0:
            raise ValueError(f"{name} must have shape [B, T] with T >= 1, got {ids.shape}")
        return ids

    def _check_length(self, length: int, what: str) -> None:
        table = self.config.max_position_embeddings
        if length > table:
            raise ValueError(f"the {what} has {length} positions, more than the position table holds "
                             f"(max_position_embeddings {table})")

    def _key_padding(self, mask, shape: tuple, name: str, like: str):
        """A [B, S] attention mask (1 = token, 0 = padding) as an additive key mask, or None."""
        if mask is None:
            return None
        weight = self.embed_tokens.weight
        mask = data_of(mask, weight.device)
        if mask.shape != shape:
            raise ValueError(f"{name} has shape {mask.shape}, expected {shape} to match {like}")
        return padding_mask(mask, shape, weight.dtype, weight.device)  # [B, S]: 0 or a large negative

    # -- generation -----------------------------------------------------------------------------
    def decoder(self, capacity: int, use_cache: bool = True, src_ids=None, src_attention_mask=None):
        """The generation loops' view of this model for one source batch: see `Seq2SeqDecoder`."""
        if src_ids is None:
            raise ValueError("an encoder-decoder Transformer generates from a source: call "
                             "model.generate(src_ids, ...) rather than the loops of minilm.generation directly")
        return Seq2SeqDecoder(self, src_ids, src_attention_mask, capacity, use_cache)

    def generate(self, src_ids, attention_mask=None, **options) -> np.ndarray:
        """Target ids [N, 1 + new] for source ids [B, S] (N = B * num_return_sequences),
        starting with the decoder start token, as transformers' generate returns them.

        attention_mask [B, S] marks source padding. decoder_start_token_id, eos_token_id,
        pad_token_id, forced_bos_token_id, forced_eos_token_id and bad_words_ids default to
        the config's; options not given come from `generation_defaults` (a checkpoint's).
        Every other option is GPT.generate's (max_new_tokens, num_beams, length_penalty,
        early_stopping, num_return_sequences, no_repeat_ngram_size, min_new_tokens,
        do_sample, temperature, top_k, top_p, repetition_penalty, seed, use_cache ...);
        max_length counts the start token, as in transformers.
        """
        bound, start_ids, options = self._generation_inputs(src_ids, attention_mask, options)
        if options.get("num_beams", 1) > 1 and options.get("do_sample"):
            raise ValueError("generate: beam sampling (num_beams > 1 with do_sample=True) is not implemented")
        return generate(bound, start_ids, **options)

    def generate_stream(self, src_ids, attention_mask=None, **options):
        """Greedy or sampled generation yielding each step's new tokens [N] (see `generate`)."""
        bound, start_ids, options = self._generation_inputs(src_ids, attention_mask, options)
        options.pop("num_beams", None)  # a checkpoint's default; streaming is greedy or sampled
        return generate_stream(bound, start_ids, **options)

    def _generation_inputs(self, src_ids, attention_mask, options: dict) -> tuple:
        """(the model bound to this source, the decoder prompt [B, 1], the options with the
        checkpoint's defaults and the config's special ids filled in where the caller left
        them out)."""
        c = self.config
        defaults = dict(self.generation_defaults)
        for pair in (("max_new_tokens", "max_length"), ("min_new_tokens", "min_length")):
            if any(name in options for name in pair):  # the caller's limit replaces the default's
                for name in pair:
                    defaults.pop(name, None)
        options = {**defaults, **options}
        if "min_length" in options:  # transformers counts the start token; minilm counts new tokens
            options["min_new_tokens"] = max(options.pop("min_length") - 1, 0)
        source = self._ids(src_ids, "src_ids")
        start = options.pop("decoder_start_token_id", None)
        start_ids = np.full((source.shape[0], 1), c.decoder_start_token_id if start is None else start,
                            dtype=np.int64)  # [B, 1]: every target starts with the start token
        for name in ("eos_token_id", "pad_token_id", "forced_bos_token_id", "forced_eos_token_id", "bad_words_ids"):
            if options.get(name) is None:
                options[name] = getattr(c, name)
        new, total = options.get("max_new_tokens"), options.get("max_length")
        positions = 1 + new if new is not None else total
        if positions is not None and positions > c.max_position_embeddings:
            raise ValueError(f"generate: {positions} target positions (the start token and the new ones) exceed "
                             f"the position table (max_position_embeddings {c.max_position_embeddings})")
        return _SourceBound(self, source, attention_mask), start_ids, options

    # -- Hugging Face layout ------------------------------------------------------------------
    def _hf_mapping(self) -> list[WeightMap]:
        """Our names and BART's/Marian's, without the "model." prefix of the body."""
        c = self.config
        if c.share_embeddings:
            maps = [WeightMap("embed_tokens.weight", "shared.weight")]
        else:
            maps = [WeightMap("embed_tokens.weight", "encoder.embed_tokens.weight"),
                    WeightMap("decoder_embed_tokens.weight", "decoder.embed_tokens.weight")]
        for side in ("encoder", "decoder"):
            if c.position_embedding == "learned":
                maps.append(WeightMap(f"{side}_positions.weight", f"{side}.embed_positions.weight"))
            if c.layernorm_embedding:
                maps += [WeightMap(f"{side}_embedding_norm.{kind}", f"{side}.layernorm_embedding.{kind}")
                         for kind in ("weight", "bias")]
        sublayers = {"encoder": [("self_attn", "self_attn", "self_attn_norm")],
                     "decoder": [("self_attn", "self_attn", "self_attn_norm"),
                                 ("cross_attn", "encoder_attn", "cross_attn_norm")]}
        for side, count in (("encoder", c.encoder_layers), ("decoder", c.decoder_layers)):
            for i in range(count):
                ours, theirs = f"{side}_layers.{i}.", f"{side}.layers.{i}."
                for kind in ("weight", "bias"):
                    for attention, their_attention, norm in sublayers[side]:
                        maps += [
                            WeightMap(f"{ours}{attention}.in_proj.{kind}",
                                      tuple(f"{theirs}{their_attention}.{p}_proj.{kind}" for p in "qkv")),
                            WeightMap(f"{ours}{attention}.out_proj.{kind}",
                                      f"{theirs}{their_attention}.out_proj.{kind}"),
                            WeightMap(f"{ours}{norm}.{kind}", f"{theirs}{their_attention}_layer_norm.{kind}"),
                        ]
                    maps += [WeightMap(f"{ours}ffn.fc1.{kind}", f"{theirs}fc1.{kind}"),
                             WeightMap(f"{ours}ffn.fc2.{kind}", f"{theirs}fc2.{kind}"),
                             WeightMap(f"{ours}final_norm.{kind}", f"{theirs}final_layer_norm.{kind}")]
        return maps

    def _hf_head_mapping(self) -> list[WeightMap]:
        """The tensors outside the "model." body: the logits bias and an untied output projection."""
        maps = [WeightMap("final_logits_bias", "final_logits_bias")]
        if self.lm_head is not None:
            maps.append(WeightMap("lm_head.weight", "lm_head.weight"))
        return maps

    @classmethod
    def from_pretrained(cls, folder) -> "Transformer":
        """Load a Hugging Face BartForConditionalGeneration or MarianMTModel folder
        (config.json + model.safetensors). generation_config.json (or else config.json) gives
        the special ids and `generation_defaults` (num_beams, max_length, length_penalty ...)."""
        hf = read_config(folder)
        # transformers takes generate's defaults from generation_config.json, else from config.json
        has_generation_file = (Path(folder) / "generation_config.json").exists()
        generation = read_config(folder, "generation_config.json") if has_generation_file else hf
        hf = {**hf, **{k: generation[k] for k in _GENERATION_IDS if k in generation}}
        config = TransformerConfig.from_hf(hf, str(Path(folder) / "config.json"))
        # Sizes against the weights' headers before anything is built (see minilm.models.hf).
        check_sizes(hf, read_shapes(folder), SEQ2SEQ_SIZES, Path(folder) / "config.json")
        model = cls(config)
        model.generation_defaults = {k: generation[k] for k in _GENERATION_OPTIONS if generation.get(k) is not None}
        # BartModel/MarianModel save the body without the "model." prefix.
        load_mapped(model, folder, model._hf_mapping() + model._hf_head_mapping(), prefixes=("model.", ""))
        return model.eval()

    def save_pretrained(self, folder) -> None:
        """Write the Hugging Face layout (BART or Marian, as the configuration is), loadable
        by transformers' BartForConditionalGeneration / MarianMTModel."""
        config = self.config.to_hf()
        mapping = [m.prefixed(theirs="model.") for m in self._hf_mapping()] + self._hf_head_mapping()
        save_mapped(self, folder, mapping, config)
        generation = {k: config[k] for k in _GENERATION_IDS if config.get(k) is not None}
        write_config(folder, {**generation, **self.generation_defaults}, "generation_config.json")


# What a BART / Marian config.json says about sizes, checked against the tensors' shapes.
SEQ2SEQ_SIZES = {"encoder_layers": Layers("encoder.layers.{}."), "decoder_layers": Layers("decoder.layers.{}."),
                 "d_model": Dim("embed_tokens.weight", 1)}

_GENERATION_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id",
                   "forced_bos_token_id", "forced_eos_token_id", "bad_words_ids")
_GENERATION_OPTIONS = ("num_beams", "max_length", "max_new_tokens", "min_length", "min_new_tokens", "length_penalty",
                       "early_stopping", "no_repeat_ngram_size", "repetition_penalty")


# ---------------------------------------------------------------------------------------
# Generation: the decoder state the loops of minilm.generation drive
# ---------------------------------------------------------------------------------------
class _SourceBound:
    """A Transformer with one source batch attached: what the generation loops see as "the
    model". Its `decoder(capacity, use_cache)` hands out a `Seq2SeqDecoder` for that source;
    everything else (training flag, eval(), parameters) is the Transformer's own."""

    def __init__(self, model: Transformer, src_ids, src_attention_mask):
        self._model, self._src_ids, self._src_attention_mask = model, src_ids, src_attention_mask

    def decoder(self, capacity: int, use_cache: bool = True) -> "Seq2SeqDecoder":
        return self._model.decoder(capacity, use_cache, self._src_ids, self._src_attention_mask)

    def __getattr__(self, name):
        return getattr(self._model, name)


class Seq2SeqDecoder:
    """The decoder state of an encoder-decoder generation (the loops call start/advance/reorder).

    `start` runs the encoder once on the B sources and projects its output to every layer's
    cross-attention keys and values once; the loops then hold N = B * k rows (k beams or
    return sequences per source, rows of one source adjacent), so each source's keys and
    values are repeated k times. The decoder's own keys/values go to a preallocated
    self-attention cache per layer (`use_cache=False` re-decodes the whole target each step:
    the reference the cache is tested against).
    """

    def __init__(self, model: Transformer, src_ids, src_attention_mask, capacity: int, use_cache: bool):
        self.model, self.capacity, self.use_cache = model, capacity, use_cache
        self.src_ids = model._ids(src_ids, "src_ids")
        mask = None if src_attention_mask is None else np.asarray(
            src_attention_mask.numpy() if isinstance(src_attention_mask, Tensor) else src_attention_mask)
        if mask is not None and mask.shape != tuple(self.src_ids.shape):
            raise ValueError(f"attention_mask has shape {mask.shape}, expected {tuple(self.src_ids.shape)} "
                             "to match src_ids")
        self.src_mask = mask
        self.caches = [nn.KVCache(capacity) for _ in model.decoder_layers] if use_cache else None
        self.ids = self.memory_kv = self.memory_mask = None
        self.rows_per_source = 1

    def start(self, ids: np.ndarray, attention_mask=None) -> np.ndarray:
        """Encode the sources, then run the decoder prompt ids [N, T]; next-token logits [N, V]."""
        sources = self.src_ids.shape[0]
        if len(ids) % sources:
            raise ValueError(f"generate: {len(ids)} decoder rows do not divide among {sources} sources")
        self.rows_per_source = k = len(ids) // sources
        memory = self.model.encode(self.src_ids, self.src_mask)  # [B, S, C]
        xp = memory.device.xp
        self.memory_kv = [tuple(Tensor(xp.repeat(t.data, k, axis=0)) for t in pair)  # 2 x [N, H, S, D]
                          for pair in self.model.memory_keys_values(memory)]
        self.memory_mask = None if self.src_mask is None else np.repeat(self.src_mask, k, axis=0)  # [N, S]
        self.ids = ids
        return self._logits(ids, attention_mask)

    def advance(self, tokens: np.ndarray, attention_mask=None) -> np.ndarray:
        """Feed one new token per row [N]; return the next-token logits [N, V]."""
        self.ids = np.concatenate([self.ids, tokens[:, None]], axis=1)  # [N, T+1]
        return self._logits(tokens[:, None] if self.use_cache else self.ids, attention_mask)

    def reorder(self, rows: np.ndarray) -> None:
        """Keep the rows of the surviving beams (row i <- old row rows[i])."""
        self.ids = self.ids[rows]
        for cache in self.caches or ():
            cache.reorder(rows)
        same_source = rows // self.rows_per_source == np.arange(len(rows)) // self.rows_per_source
        if not same_source.all():  # beams never leave their source; any other reordering moves the memory too
            self.memory_kv = [tuple(Tensor(t.data[t.device.xp.asarray(rows)]) for t in pair)
                              for pair in self.memory_kv]
            self.memory_mask = None if self.memory_mask is None else self.memory_mask[rows]

    def _logits(self, ids, attention_mask) -> np.ndarray:
        out = self.model.decode(ids, src_attention_mask=self.memory_mask, tgt_attention_mask=attention_mask,
                                caches=self.caches, memory_kv=self.memory_kv)
        return last_logits(out.logits)  # [N, V]
