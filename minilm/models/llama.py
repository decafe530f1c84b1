"""Llama: the decoder of Llama 2/3, SmolLM and Qwen2, so their checkpoints run unchanged.

    token ids [B, T]
      -> token embedding                                              [B, T, C]
      -> num_hidden_layers pre-norm blocks:
           x + attn(rms_norm(x))   causal grouped-query attention, q and k rotated by
                                   their positions (RoPE; no position embedding is added)
           x + mlp(rms_norm(x))    SwiGLU: down(silu(gate(x)) * up(x))
      -> final RMSNorm
      -> LM head (its own weight, or tied to the embedding)          [B, T, vocab]

The family members differ only in their configs: Llama 3 has a larger rope_theta and the
llama3 frequency scaling; Qwen2 puts biases on q, k and v; small models tie the LM head to
the embedding. Checkpoints load from a Hugging Face folder or a GGUF file (dequantized).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import functional as F
from .. import nn, ops
from ..autograd import Tensor
from ..generation import CausalDecoder, GenerationMixin
from ..nn.attention import padding_mask
from .hf import CheckpointError, Dim, Layers, WeightMap, check_sizes, load_mapped, read_config, read_shapes, save_mapped
from .output import ModelOutput

MODEL_TYPES = ("llama", "qwen2")


@dataclass
class LlamaConfig:
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None  # None: as many as query heads (no grouping)
    max_position_embeddings: int = 2048  # the context length
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # {"rope_type": "llama3" | "linear", "factor": ..., ...}
    rope_freq_factors: list | None = None  # per-pair divisors of the frequencies (GGUF's rope_freqs)
    attention_bias: bool = False  # biases on the q, k, v projections
    attention_out_bias: bool = False  # a bias on the output projection (Llama's attention_bias sets both)
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    bos_token_id: int | None = 1
    eos_token_id: int | list | None = 2
    model_type: str = "llama"  # "llama" or "qwen2": the Hugging Face architecture save_pretrained writes

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "max_position_embeddings"):
            if getattr(self, name) < 1:
                raise ValueError(f"LlamaConfig.{name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"LlamaConfig: hidden_size {self.hidden_size} is not divisible by "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"LlamaConfig: num_attention_heads {self.num_attention_heads} is not a multiple of "
                             f"num_key_value_heads {self.num_key_value_heads}")
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"LlamaConfig: model_type {self.model_type!r} is not one of {MODEL_TYPES}")
        if not 0.0 <= self.attention_dropout < 1.0:
            raise ValueError(f"LlamaConfig.attention_dropout must be in [0, 1), got {self.attention_dropout}")
        nn.rotary.rope_inverse_frequencies(self.head_dim, self.rope_theta, self.rope_scaling)  # checks the scaling

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def block_size(self) -> int:
        """The context length, under the name generation reads."""
        return self.max_position_embeddings

    def to_dict(self) -> dict:
        return asdict(self)

    # -- Hugging Face config.json ----------------------------------------------------------------
    @classmethod
    def from_hf(cls, hf: dict, source: str = "config.json") -> "LlamaConfig":
        """Read a transformers LlamaConfig / Qwen2Config dict; options minilm does not
        implement are errors that name them (never silently dropped)."""
        model_type = hf.get("model_type", "llama")
        if model_type not in MODEL_TYPES:
            raise CheckpointError(f"{source}: model_type {model_type!r} is not a Llama-family model minilm runs "
                                  f"({', '.join(MODEL_TYPES)})")
        required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
        missing = [name for name in required if name not in hf]
        if missing:
            raise CheckpointError(f"{source}: missing {', '.join(missing)}")
        problems = []
        if hf.get("hidden_act", "silu") != "silu":
            problems.append(f"hidden_act {hf['hidden_act']!r} (minilm's SwiGLU uses silu)")
        heads = hf["num_attention_heads"]
        if hf.get("head_dim") not in (None, hf["hidden_size"] // heads):
            problems.append(f"head_dim {hf['head_dim']} differs from hidden_size / num_attention_heads")
        rope = dict(hf.get("rope_parameters") or {})  # transformers >= 5 writes the rope settings here
        theta = rope.pop("rope_theta", hf.get("rope_theta", 10000.0))
        if hf.get("rope_scaling"):
            rope = dict(hf["rope_scaling"])
        if rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)) != 1.0:
            problems.append("partial_rotary_factor != 1 (minilm rotates the whole head)")
        rope.pop("partial_rotary_factor", None)
        scaling = rope if rope.get("rope_type", rope.get("type", "default")) != "default" else None
        if model_type == "qwen2" and hf.get("use_sliding_window"):
            problems.append("use_sliding_window (minilm attends over the whole context)")
        if problems:
            raise CheckpointError(f"{source}: not supported by minilm's Llama: " + "; ".join(problems))
        qkv_bias = True if model_type == "qwen2" else bool(hf.get("attention_bias", False))
        return cls(
            vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], intermediate_size=hf["intermediate_size"],
            num_hidden_layers=hf["num_hidden_layers"], num_attention_heads=heads,
            num_key_value_heads=hf.get("num_key_value_heads") or heads,
            max_position_embeddings=hf.get("max_position_embeddings", 2048), rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            rope_theta=float(theta), rope_scaling=scaling, attention_bias=qkv_bias,
            attention_out_bias=model_type == "llama" and bool(hf.get("attention_bias", False)),
            mlp_bias=bool(hf.get("mlp_bias", False)), tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            attention_dropout=float(hf.get("attention_dropout", 0.0)),
            initializer_range=hf.get("initializer_range", 0.02), bos_token_id=hf.get("bos_token_id"),
            eos_token_id=hf.get("eos_token_id"), model_type=model_type,
        )

    def to_hf(self) -> dict:
        if self.rope_freq_factors is not None:
            raise ValueError("save_pretrained: per-pair rope frequency factors (from a GGUF file's rope_freqs) "
                             "have no Hugging Face config field")
        if self.model_type == "qwen2" and (not self.attention_bias or self.attention_out_bias or self.mlp_bias):
            raise ValueError("save_pretrained: Qwen2 has biases on q, k, v only; this config differs")
        if self.model_type == "llama" and self.attention_bias != self.attention_out_bias:
            raise ValueError("save_pretrained: Llama's attention_bias covers q, k, v and the output together; "
                             "this config sets them differently (model_type='qwen2' has q/k/v biases only)")
        architecture = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[self.model_type]
        config = {
            "architectures": [architecture], "model_type": self.model_type, "hidden_act": "silu",
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size, "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads, "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim, "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps, "rope_theta": self.rope_theta, "rope_scaling": self.rope_scaling,
            "tie_word_embeddings": self.tie_word_embeddings, "attention_dropout": self.attention_dropout,
            "initializer_range": self.initializer_range, "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id, "use_cache": True,
        }
        if self.model_type == "llama":
            config.update(attention_bias=self.attention_bias, mlp_bias=self.mlp_bias)
        else:
            config.update(use_sliding_window=False, sliding_window=None)
        return config


class LlamaBlock(nn.Module):
    """x + attn(attn_norm(x)), then x + mlp(mlp_norm(x)), on [B, T, C]."""

    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.attn_norm = nn.RMSNorm(c.hidden_size, eps=c.rms_norm_eps)
        self.attn = nn.MultiHeadAttention(c.hidden_size, c.num_attention_heads, dropout=c.attention_dropout,
                                          bias=c.attention_bias, num_kv_heads=c.num_key_value_heads,
                                          out_bias=c.attention_out_bias)
        self.mlp_norm = nn.RMSNorm(c.hidden_size, eps=c.rms_norm_eps)
        self.mlp = nn.SwiGLU(c.hidden_size, c.intermediate_size, bias=c.mlp_bias)

    def forward(self, x: Tensor, rotary, key_padding_mask=None, cache=None, need_weights: bool = False):
        h, weights = self.attn(self.attn_norm(x), key_padding_mask=key_padding_mask, is_causal=True, cache=cache,
                               rotary=rotary, need_weights=need_weights, average_attn_weights=False)
        x = x + h  # [B, T, C]
        x = x + self.mlp(self.mlp_norm(x))
        return x, weights


class Llama(nn.Module, GenerationMixin, nn.GradientCheckpointingMixin):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.hidden_size)
        self.blocks = nn.ModuleList(LlamaBlock(c) for _ in range(c.num_hidden_layers))
        self.norm = nn.RMSNorm(c.hidden_size, eps=c.rms_norm_eps)
        self.lm_head = None if c.tie_word_embeddings else nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        inv_freq = nn.rotary.rope_inverse_frequencies(c.head_dim, c.rope_theta, c.rope_scaling)
        if c.rope_freq_factors is not None:
            inv_freq = inv_freq / np.asarray(c.rope_freq_factors, dtype=np.float64)
        self.rotary = nn.RotaryEmbedding(c.head_dim, inv_freq=inv_freq)
        self._init_weights()

    def _init_weights(self) -> None:
        """Hugging Face's Llama initialisation: N(0, initializer_range) for every matrix and the
        embedding, zero biases, unit norm weights."""
        std = self.config.initializer_range
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)
            else:
                nn.init.normal_(p, 0.0, std)

    def forward(self, ids, targets=None, attention_mask=None, position_ids=None, caches=None,
                output_attentions: bool = False, logits_to_keep: int = 0) -> ModelOutput:
        """Logits [B, T, vocab] for token ids [B, T] (and the loss, with `targets` [B, T]: the
        next token of each position, -100 to ignore one).

        attention_mask [B, P+T]: 1 for real tokens, 0 for padding (left padding for batched
        generation); positions then count real tokens only, as Hugging Face's generate does.
        position_ids [B or 1, T]: explicit positions instead.
        caches: one KV cache per layer holding P earlier positions (incremental decoding).
        output_attentions: also return each layer's attention weights [B, H, T, P+T].
        logits_to_keep: the logits of the last that many positions only (0: all). Generation
        needs the last one: on a prompt, the LM head is then one row instead of T.
        """
        xp = self.embed.weight.device.xp
        ids = ids.data if isinstance(ids, Tensor) else xp.asarray(ids)
        if ids.ndim != 2:
            raise ValueError(f"Llama expects token ids of shape [B, T], got {ids.shape}")
        batch, length = ids.shape
        past = len(caches[0]) if caches else 0
        if past + length > self.config.max_position_embeddings:
            raise ValueError(f"sequence of {past + length} tokens is longer than the model's context "
                             f"(max_position_embeddings {self.config.max_position_embeddings})")
        dtype = self.embed.weight.dtype
        key_padding, positions = _padding_and_positions(attention_mask, batch, past, length, dtype,
                                                        self.embed.weight.device)
        if position_ids is not None:
            positions = position_ids.data if isinstance(position_ids, Tensor) else xp.asarray(position_ids)
        rotary = self.rotary(positions, dtype, xp)  # cos, sin [B or 1, 1, T, D/2]

        x = self.embed(ids)  # [B, T, C]
        attentions = []
        for i, block in enumerate(self.blocks):
            x, weights = block(x, rotary, key_padding_mask=key_padding, cache=caches[i] if caches else None,
                               need_weights=output_attentions)
            attentions.append(weights)  # [B, H, T, P+T] (None unless asked for)
        if logits_to_keep:
            if targets is not None:
                raise ValueError("Llama.forward: a loss needs every position's logits; drop logits_to_keep")
            x = x[:, -logits_to_keep:]  # [B, T, C] -> [B, K, C]
        x = self.norm(x)  # [B, T, C]
        weight = self.embed.weight if self.lm_head is None else self.lm_head.weight
        logits = F.linear(x, weight)  # [B, T, C] @ [C, V] -> [B, T, V]
        loss = None
        if targets is not None:
            targets = targets.data if isinstance(targets, Tensor) else xp.asarray(targets)
            loss = F.cross_entropy(ops.reshape(logits, (-1, logits.shape[-1])), targets.reshape(-1))
        return ModelOutput(logits, loss=loss, attentions=attentions if output_attentions else None)

    def decoder(self, capacity: int, use_cache: bool = True) -> CausalDecoder:
        """The generation loops' view of this model: see `minilm.generation.CausalDecoder`.
        It reads the last position's logits only, so the model computes no others."""
        return CausalDecoder(functools.partial(self, logits_to_keep=1), len(self.blocks), capacity, use_cache)

    # -- Hugging Face layout -------------------------------------------------------------------
    def _hf_mapping(self) -> list[WeightMap]:
        return _weight_map(self, HF_NAMES)

    @classmethod
    def from_pretrained(cls, path) -> "Llama":
        """Load a Hugging Face folder (config.json + model.safetensors, or the shards of
        model.safetensors.index.json) or a .gguf file (weights dequantized to float32)."""
        path = Path(path)
        if path.suffix.lower() == ".gguf":
            return _from_gguf(cls, path)
        if not path.is_dir():
            raise CheckpointError(f"{path}: neither a checkpoint folder nor a .gguf file")
        hf = read_config(path)
        config = LlamaConfig.from_hf(hf, str(path / "config.json"))  # options minilm does not run: errors
        # Sizes against the weights' headers before anything is built: an edited config.json
        # (num_hidden_layers: 1000000000) is an error here, not minutes of allocation.
        check_sizes(hf, read_shapes(path), LLAMA_SIZES, path / "config.json")
        with nn.init.skip_init():  # every weight is loaded next
            model = cls(config)
        load_mapped(model, path, model._hf_mapping())
        return model.eval()

    def save_pretrained(self, folder) -> None:
        """Write the Hugging Face layout (config.json + model.safetensors) that transformers'
        LlamaForCausalLM / Qwen2ForCausalLM loads."""
        save_mapped(self, folder, self._hf_mapping(), self.config.to_hf())


# Checkpoint names of each weight: Hugging Face's and llama.cpp's (GGUF). {i} is the layer.
HF_NAMES = dict(
    embed="model.embed_tokens", norm="model.norm", lm_head="lm_head", layer="model.layers.{i}.",
    attn_norm="input_layernorm", q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj",
    o="self_attn.o_proj", mlp_norm="post_attention_layernorm", gate="mlp.gate_proj", up="mlp.up_proj",
    down="mlp.down_proj",
)
GGUF_NAMES = dict(
    embed="token_embd", norm="output_norm", lm_head="output", layer="blk.{i}.", attn_norm="attn_norm",
    q="attn_q", k="attn_k", v="attn_v", o="attn_output", mlp_norm="ffn_norm", gate="ffn_gate", up="ffn_up",
    down="ffn_down",
)


def _weight_map(model: Llama, names: dict) -> list[WeightMap]:
    """Our parameter names against a checkpoint's: q, k, v stacked into the attention's
    in_proj (rows C, KVH D, KVH D), gate and up into the MLP's gate_up."""
    c = model.config
    kv = c.num_key_value_heads * c.head_dim
    qkv_rows = (c.hidden_size, kv, kv)
    maps = [WeightMap("embed.weight", names["embed"] + ".weight"), WeightMap("norm.weight", names["norm"] + ".weight")]
    for i in range(c.num_hidden_layers):
        ours, theirs = f"blocks.{i}.", names["layer"].format(i=i)
        qkv = tuple(theirs + names[p] for p in "qkv")
        gate_up = (theirs + names["gate"], theirs + names["up"])
        maps += [
            WeightMap(ours + "attn_norm.weight", theirs + names["attn_norm"] + ".weight"),
            WeightMap(ours + "attn.in_proj.weight", tuple(n + ".weight" for n in qkv), rows=qkv_rows),
            WeightMap(ours + "attn.out_proj.weight", theirs + names["o"] + ".weight"),
            WeightMap(ours + "mlp_norm.weight", theirs + names["mlp_norm"] + ".weight"),
            WeightMap(ours + "mlp.gate_up.weight", tuple(n + ".weight" for n in gate_up)),
            WeightMap(ours + "mlp.down.weight", theirs + names["down"] + ".weight"),
        ]
        if c.attention_bias:
            maps.append(WeightMap(ours + "attn.in_proj.bias", tuple(n + ".bias" for n in qkv), rows=qkv_rows))
        if c.attention_out_bias:
            maps.append(WeightMap(ours + "attn.out_proj.bias", theirs + names["o"] + ".bias"))
        if c.mlp_bias:
            maps += [WeightMap(ours + "mlp.gate_up.bias", tuple(n + ".bias" for n in gate_up)),
                     WeightMap(ours + "mlp.down.bias", theirs + names["down"] + ".bias")]
    if model.lm_head is not None:
        maps.append(WeightMap("lm_head.weight", names["lm_head"] + ".weight"))
    return maps


def _padding_and_positions(attention_mask, batch: int, past: int, length: int, dtype, device):
    """The additive key-padding mask [B, P+T] (or None) and the position ids of the new tokens.

    Positions count real tokens only (a left-padded row starts at 0 at its first real
    token), as Hugging Face's generate numbers them.
    """
    xp = device.xp
    if attention_mask is None:
        return None, xp.arange(past, past + length)[None, :]  # [1, T]
    key_padding = padding_mask(attention_mask, (batch, past + length), dtype, device)  # [B, P+T]
    real = key_padding == 0
    positions = xp.where(real, xp.cumsum(real, axis=-1) - 1, 1)[:, past:]  # [B, T]
    return key_padding, positions


# ---------------------------------------------------------------------------------------
# GGUF files (llama.cpp's format): config from the metadata, tensors dequantized
# ---------------------------------------------------------------------------------------
def _gguf_config(gguf, path) -> LlamaConfig:
    metadata, infos = gguf.metadata, gguf.tensor_infos
    arch = metadata.get("general.architecture")
    if arch not in MODEL_TYPES:
        raise CheckpointError(f"{path}: general.architecture {arch!r} is not a Llama-family model minilm runs "
                              f"({', '.join(MODEL_TYPES)})")

    def field(name, default=None):
        value = metadata.get(f"{arch}.{name}", default)
        if value is None:
            raise CheckpointError(f"{path}: metadata field {arch}.{name} is missing")
        if not np.isscalar(value):
            raise CheckpointError(f"{path}: metadata field {arch}.{name} varies per layer ({value!r}), "
                                  f"which minilm's Llama does not support")
        return value

    if "token_embd.weight" not in infos:
        raise CheckpointError(f"{path}: no token_embd.weight tensor")
    heads, hidden = int(field("attention.head_count")), int(field("embedding_length"))
    if int(field("rope.dimension_count", hidden // heads)) != hidden // heads:
        raise CheckpointError(f"{path}: {arch}.rope.dimension_count differs from the head size (partial rotary "
                              f"embedding is not supported)")
    scaling_type = metadata.get(f"{arch}.rope.scaling.type", "none")
    if scaling_type not in ("none", "linear"):
        raise CheckpointError(f"{path}: rope scaling {scaling_type!r} is not supported by minilm")
    scaling = None if scaling_type == "none" else {"rope_type": "linear", "factor": float(field("rope.scaling.factor"))}
    if "blk.0.attn_q.bias" in infos and arch == "llama":
        raise CheckpointError(f"{path}: q/k/v biases in a llama-architecture GGUF are not supported")
    factors = gguf.tensor("rope_freqs.weight").astype(np.float64).tolist() if "rope_freqs.weight" in infos else None
    return LlamaConfig(
        vocab_size=int(infos["token_embd.weight"].shape[0]), hidden_size=hidden,
        intermediate_size=int(field("feed_forward_length")), num_hidden_layers=int(field("block_count")),
        num_attention_heads=heads, num_key_value_heads=int(field("attention.head_count_kv", heads)),
        max_position_embeddings=int(field("context_length")),
        rms_norm_eps=float(field("attention.layer_norm_rms_epsilon")),
        rope_theta=float(field("rope.freq_base", 10000.0)),
        rope_scaling=scaling, rope_freq_factors=factors, attention_bias="blk.0.attn_q.bias" in infos,
        attention_out_bias="blk.0.attn_output.bias" in infos, tie_word_embeddings="output.weight" not in infos,
        bos_token_id=metadata.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=metadata.get("tokenizer.ggml.eos_token_id"),
        model_type=arch,
    )


class _GGUFTensors(Mapping):
    """A GGUF file's tensors by name, dequantized to float32 when read. llama.cpp stores a
    llama model's q and k rows permuted for its interleaved rotation; reading undoes that,
    giving Hugging Face's rotate-half layout (qwen2 files are stored unpermuted)."""

    def __init__(self, gguf, config: LlamaConfig, unpermute):
        self.gguf, self.config, self.unpermute = gguf, config, unpermute

    def __getitem__(self, name):
        array = self.gguf.tensor(name)
        if self.config.model_type == "llama" and name.endswith((".attn_q.weight", ".attn_k.weight")):
            heads = self.config.num_attention_heads if ".attn_q." in name else self.config.num_key_value_heads
            array = self.unpermute(array, heads)
        return array

    def shape_of(self, name) -> tuple:
        return self.gguf.tensor_infos[name].shape  # without dequantizing

    def __iter__(self):
        return iter(self.gguf.tensor_infos)

    def __len__(self):
        return len(self.gguf.tensor_infos)


# What a Hugging Face config.json says about sizes, checked against the tensors (minilm.models.hf).
LLAMA_SIZES = {"num_hidden_layers": Layers("layers.{}."), "hidden_size": Dim("embed_tokens.weight", 1),
               "vocab_size": Dim("embed_tokens.weight", 0), "intermediate_size": Dim("mlp.up_proj.weight", 0)}


def _check_gguf_sizes(config: LlamaConfig, infos: dict, path) -> None:
    """The metadata's sizes against the tensor infos, before the model is built."""
    blocks = {name.split(".")[1] for name in infos if name.startswith("blk.")}
    problems = []
    if config.num_hidden_layers > len(blocks):
        problems.append(f"block_count {config.num_hidden_layers}, but the file holds {len(blocks)} blocks")
    embedding = infos.get("token_embd.weight")
    if embedding is not None and tuple(embedding.shape) != (config.vocab_size, config.hidden_size):
        problems.append(f"vocabulary {config.vocab_size} x embedding_length {config.hidden_size}, but "
                        f"token_embd.weight has shape {list(embedding.shape)}")
    if problems:
        raise CheckpointError(f"{path}: the metadata does not match the tensors: " + "; ".join(problems))


def _from_gguf(cls, path: Path) -> Llama:
    from ..gguf import GGUFFile, reverse_llama_qk_permutation

    with GGUFFile(path) as gguf, nn.init.skip_init():  # every weight is loaded next
        config = _gguf_config(gguf, path)
        _check_gguf_sizes(config, gguf.tensor_infos, path)
        model = cls(config)
        tensors = _GGUFTensors(gguf, model.config, reverse_llama_qk_permutation)
        load_mapped(model, path, _weight_map(model, GGUF_NAMES), tensors=tensors)
    return model.eval()
