"""GPT: the GPT-2 architecture exactly, so Hugging Face GPT-2 checkpoints run unchanged.

    token ids [B, T]
      -> token embedding wte + learned position embedding wpe        [B, T, C]
      -> n_layer pre-LN blocks: x + attn(ln_1(x)), then x + mlp(ln_2(x))
         (causal self-attention, MLP C -> 4C -> C with tanh-approximated GELU)
      -> final LayerNorm ln_f
      -> LM head, tied to wte: logits = x @ wte^T                    [B, T, vocab]
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .. import functional as F
from .. import nn, ops
from ..autograd import data_of, no_grad
from ..generation import CausalDecoder, GenerationMixin
from ..nn.attention import padding_mask
from .hf import CheckpointError, Dim, Layers, Option, WeightMap, load_mapped, read_config, save_mapped
from .output import ModelOutput


@dataclass
class GPTConfig:
    vocab_size: int = 50257
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024  # the context length (HF: n_positions)
    dropout: float = 0.0
    bias: bool = True
    tie_weights: bool = True
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        for name in ("vocab_size", "n_layer", "n_head", "n_embd", "block_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"GPTConfig.{name} must be positive, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd {self.n_embd} is not divisible by n_head {self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)


# What GPT implements of a Hugging Face GPT-2 config.json (see minilm.models.hf.read_config).
GPT2_OPTIONS = {
    "vocab_size": Option("int"), "n_layer": Option("int"), "n_head": Option("int"), "n_embd": Option("int"),
    "n_positions": Option("int"), "n_ctx": Option("int"), "n_inner": Option("any"),
    "activation_function": Option(allowed=("gelu_new", "gelu_pytorch_tanh", "gelu_fast")),
    "layer_norm_epsilon": Option("float"), "tie_word_embeddings": Option("bool"),
    "resid_pdrop": Option("float"), "embd_pdrop": Option("float"), "attn_pdrop": Option("float"),
    "scale_attn_weights": Option(allowed=(True,)), "scale_attn_by_inverse_layer_idx": Option(allowed=(False,)),
    "reorder_and_upcast_attn": Option("bool"),  # float32 attention either way here
    "add_cross_attention": Option(allowed=(False,)), "is_decoder": Option("bool"),
}
GPT2_SIZES = {"n_layer": Layers("h.{}."), "n_embd": Dim("wte.weight", 1), "vocab_size": Dim("wte.weight", 0),
              "n_positions": Dim("wpe.weight", 0)}


class GPT(nn.Module, GenerationMixin, nn.GradientCheckpointingMixin):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        c = config
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.wpe = nn.Embedding(c.block_size, c.n_embd)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            nn.TransformerBlock(c.n_embd, c.n_head, 4 * c.n_embd, dropout=c.dropout, norm_first=True,
                                activation="gelu_tanh", causal=True, layer_norm_eps=c.layer_norm_eps, bias=c.bias)
            for _ in range(c.n_layer)
        )
        self.ln_f = nn.LayerNorm(c.n_embd, eps=c.layer_norm_eps)
        self.lm_head = None if c.tie_weights else nn.Linear(c.n_embd, c.vocab_size, bias=False)
        gpt2_init_(self, c.n_layer)

    def forward(self, ids=None, targets=None, attention_mask=None, position_ids=None, caches=None,
                inputs_embeds=None, output_attentions: bool = False):
        """A ModelOutput: logits [B, T, vocab] for token ids [B, T], and the loss with
        `targets` [B, T] (so `logits, loss = model(ids, targets=targets)` unpacks).

        attention_mask [B, P+T]: 1 for real tokens, 0 for padding (left padding for batched
        generation); positions then count real tokens only, as Hugging Face does.
        caches: one nn.KVCache per layer holding P earlier positions (incremental decoding).
        inputs_embeds [B, T, C]: token vectors to use instead of wte(ids), e.g. a leaf tensor
        to differentiate the output with respect to (gradient attributions).
        output_attentions: also return every layer's attention weights (`.attentions`), a
        list of [B, H, T, P+T] tensors.
        """
        if (ids is None) == (inputs_embeds is None):
            raise ValueError("GPT.forward needs exactly one of ids and inputs_embeds")
        if inputs_embeds is not None:
            if inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != self.config.n_embd:
                raise ValueError(f"inputs_embeds must have shape [B, T, {self.config.n_embd}], "
                                 f"got {inputs_embeds.shape}")
            batch, length = inputs_embeds.shape[:2]
        else:
            ids = data_of(ids, self.wte.weight.device)
            if ids.ndim != 2:
                raise ValueError(f"GPT expects token ids of shape [B, T], got {ids.shape}")
            batch, length = ids.shape
        past = len(caches[0]) if caches else 0
        if past + length > self.config.block_size:
            raise ValueError(
                f"sequence of {past + length} tokens is longer than the model's context "
                f"(block_size {self.config.block_size})"
            )
        device = self.wte.weight.device
        key_padding = None
        if attention_mask is not None:
            mask = data_of(attention_mask, device)
            if mask.dtype.kind not in "biu":  # positions are counted from it: 0/1 integers or booleans
                raise ValueError(f"attention_mask must hold 0/1 integers or booleans, got dtype {mask.dtype}")
            key_padding = padding_mask(attention_mask, (batch, past + length), self.wte.weight.dtype, device)  # [B, S]
            if position_ids is None:  # count real tokens only, as Hugging Face does
                positions = device.xp.cumsum(mask, axis=-1) - 1
                position_ids = device.xp.where(mask.astype(bool), positions, 1)[:, past:]
        if position_ids is None:
            position_ids = device.xp.arange(past, past + length)[None, :]  # [1, T]
        position_ids = data_of(position_ids, device)

        tokens = self.wte(ids) if inputs_embeds is None else inputs_embeds  # [B, T, C]
        x = tokens + self.wpe(position_ids)  # [B, T, C] + [B or 1, T, C]
        x = self.drop(x)
        attentions = []
        for i, block in enumerate(self.blocks):
            cache = caches[i] if caches else None
            if output_attentions:
                x, weights = block(x, key_padding_mask=key_padding, cache=cache, need_weights=True)
                attentions.append(weights)  # [B, H, T, P+T]
            else:
                x = block(x, key_padding_mask=key_padding, cache=cache)  # [B, T, C]
        x = self.ln_f(x)  # [B, T, C]
        weight = self.wte.weight if self.lm_head is None else self.lm_head.weight
        logits = F.linear(x, weight)  # [B, T, C] @ [C, V] -> [B, T, V]
        loss = None
        if targets is not None:
            flat_targets = data_of(targets, device).reshape(-1)  # [B * T]
            loss = F.cross_entropy(ops.reshape(logits, (-1, logits.shape[-1])), flat_targets)
        return ModelOutput(logits, loss, attentions if output_attentions else None)

    def decoder(self, capacity: int, use_cache: bool = True) -> CausalDecoder:
        """The generation loops' view of this model: see `minilm.generation.CausalDecoder`."""
        return CausalDecoder(self, len(self.blocks), capacity, use_cache)

    def num_parameters(self, trainable_only: bool = False, exclude_positions: bool = False) -> int:
        count = super().num_parameters(trainable_only)
        return count - self.wpe.weight.size if exclude_positions else count

    # -- Hugging Face layout -------------------------------------------------------------------
    def _hf_mapping(self) -> list[WeightMap]:
        # Names without the "transformer." prefix that GPT2LMHeadModel adds (see save_pretrained).
        maps = [WeightMap("wte.weight", "wte.weight"), WeightMap("wpe.weight", "wpe.weight")]
        bias = self.config.bias
        for i in range(self.config.n_layer):
            ours, theirs = f"blocks.{i}.", f"h.{i}."
            pairs = [("ln_1.weight", "ln_1.weight", False), ("ln_1.bias", "ln_1.bias", False),
                     ("attn.in_proj.weight", "attn.c_attn.weight", True),
                     ("attn.out_proj.weight", "attn.c_proj.weight", True),
                     ("ln_2.weight", "ln_2.weight", False), ("ln_2.bias", "ln_2.bias", False),
                     ("mlp.fc.weight", "mlp.c_fc.weight", True), ("mlp.proj.weight", "mlp.c_proj.weight", True)]
            if bias:
                pairs += [("attn.in_proj.bias", "attn.c_attn.bias", False),
                          ("attn.out_proj.bias", "attn.c_proj.bias", False),
                          ("mlp.fc.bias", "mlp.c_fc.bias", False), ("mlp.proj.bias", "mlp.c_proj.bias", False)]
            maps += [WeightMap(ours + a, theirs + b, t) for a, b, t in pairs]
        maps += [WeightMap("ln_f.weight", "ln_f.weight"), WeightMap("ln_f.bias", "ln_f.bias")]
        return maps

    @classmethod
    def from_pretrained(cls, folder) -> "GPT":
        """Load a Hugging Face GPT-2 folder (config.json + model.safetensors)."""
        hf = read_config(folder, options=GPT2_OPTIONS, sizes=GPT2_SIZES,
                         required=("vocab_size", "n_layer", "n_head", "n_embd"))
        if hf.get("n_inner") not in (None, 4 * hf["n_embd"]):
            raise CheckpointError(f"{folder}/config.json: n_inner {hf['n_inner']} differs from 4 * n_embd, which "
                                  "minilm's GPT assumes")
        if hf["n_embd"] % hf["n_head"]:
            raise CheckpointError(f"{folder}/config.json: n_embd {hf['n_embd']} is not divisible by n_head "
                                  f"{hf['n_head']}")
        config = GPTConfig(
            vocab_size=hf["vocab_size"], n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"],
            block_size=hf.get("n_positions", 1024), dropout=0.0, bias=True,
            tie_weights=hf.get("tie_word_embeddings", True), layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        )
        model = cls(config)
        # GPT2LMHeadModel saves "transformer.h.0...", GPT2Model "h.0...".
        load_mapped(model, folder, model._hf_mapping(), prefixes=("transformer.", ""))
        if model.lm_head is not None:
            load_mapped(model, folder, [WeightMap("lm_head.weight", "lm_head.weight")])
        return model.eval()

    def save_pretrained(self, folder) -> None:
        """Write the Hugging Face GPT-2 layout, loadable by transformers' GPT2LMHeadModel."""
        c = self.config
        config = {
            "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "activation_function": "gelu_new",
            "vocab_size": c.vocab_size, "n_layer": c.n_layer, "n_head": c.n_head, "n_embd": c.n_embd,
            "n_positions": c.block_size, "n_ctx": c.block_size, "n_inner": None,
            "layer_norm_epsilon": c.layer_norm_eps, "tie_word_embeddings": c.tie_weights,
            "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.dropout,
            "initializer_range": 0.02, "scale_attn_weights": True, "use_cache": True,
            "bos_token_id": c.vocab_size - 1, "eos_token_id": c.vocab_size - 1,
        }
        if not c.bias:
            raise ValueError("save_pretrained: the GPT-2 layout has biases; this model was built with bias=False")
        mapping = [m.prefixed(theirs="transformer.") for m in self._hf_mapping()]
        if self.lm_head is not None:
            mapping.append(WeightMap("lm_head.weight", "lm_head.weight"))
        save_mapped(self, folder, mapping, config)


def gpt2_init_(model, n_layer: int, std: float = 0.02,
               residual_suffixes: tuple = ("attn.out_proj.weight", "mlp.proj.weight")):
    """GPT-2's scheme: Linear and Embedding weights ~ N(0, 0.02^2), biases 0, LayerNorm 1/0;
    the projections that write into the residual stream (names ending in
    `residual_suffixes`) get std / sqrt(2 n_layer), so the residual sum's variance does not
    grow with depth (each block adds two such projections)."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, std)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with no_grad():
                module.weight[module.padding_idx] = 0.0
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            if module.weight is not None:
                nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    residual_std = std / math.sqrt(2 * n_layer)
    for name, p in model.named_parameters():
        if name.endswith(residual_suffixes):
            nn.init.normal_(p, 0.0, residual_std)
    return model
