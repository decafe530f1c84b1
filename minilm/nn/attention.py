"""Multi-head attention (self- and cross-), with masks and an optional key/value cache.

Layout is batch first: [B, T, C], C = num_heads * head_dim. The query/key/value projection
is one fused Linear of [3C, C] (PyTorch's `in_proj_weight`); for self-attention it is one
GEMM producing [B, T, 3C].

Grouped-query attention (Llama 2 70B, Llama 3, SmolLM, Qwen2): `num_kv_heads` < `num_heads`
key/value heads, each shared by a group of G = num_heads / num_kv_heads query heads. The
projection is then [C + 2 KVH D, C], the cache holds KVH heads, and the shared keys are never
copied G times: the G query heads of a group are stacked as rows of one matrix,
[B, H, L, D] -> [B, KVH, G*L, D], so one GEMM per group scores them all against its keys.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import ops
from ..autograd import Tensor, data_of
from ..backend import array_module
from .layers import Linear
from .module import Module


class KVCache:
    """The keys and values of the positions an attention layer has already seen.

    Pass one per layer as `cache=` while decoding token by token: each call appends the new
    positions' keys/values ([B, H, T_new, D]) and attends over all of them, so earlier
    positions are projected once instead of at every step.

    capacity=None: the cache grows by concatenation (a recorded op, so gradients flow
    through it). capacity=N (generation): buffers for N positions are allocated at the first
    update and every update writes into them in place, with no re-allocation per token;
    attention reads a view of the filled part.
    """

    def __init__(self, capacity: int | None = None):
        if capacity is not None and capacity < 1:
            raise ValueError(f"KVCache: capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.key: Tensor | None = None  # [B, H, S, D]: every position so far
        self.value: Tensor | None = None  # [B, H, S, D]
        self._buffers = None  # (keys, values) arrays [B, H, capacity, D], when preallocated

    def __len__(self) -> int:
        return 0 if self.key is None else self.key.shape[-2]

    def update(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Append the new positions and return the keys/values of all positions so far."""
        if self.capacity is None:
            if self.key is not None:
                key = ops.concatenate([self.key, key], axis=2)  # [B, H, S, D] + [B, H, T, D] -> [B, H, S+T, D]
                value = ops.concatenate([self.value, value], axis=2)
        else:
            batch, heads, new, dim = key.shape
            if self._buffers is None:
                xp = key.device.xp
                self._buffers = (xp.empty((batch, heads, self.capacity, dim), dtype=key.dtype),
                                 xp.empty((batch, heads, self.capacity, dim), dtype=value.dtype))
            start, end = len(self), len(self) + new
            if end > self.capacity:
                raise ValueError(f"KV cache full: {end} positions needed, {self.capacity} preallocated")
            keys, values = self._buffers
            keys[:, :, start:end] = key.data
            values[:, :, start:end] = value.data
            key, value = Tensor(keys[:, :, :end]), Tensor(values[:, :, :end])
        self.key, self.value = key, value
        return key, value

    def reorder(self, rows) -> None:
        """Keep the rows of the surviving beams (row i <- old row rows[i])."""
        if self.key is None:
            return
        rows = self.key.device.xp.asarray(rows)
        if self._buffers is not None:
            self._buffers = tuple(buffer[rows] for buffer in self._buffers)
            length = len(self)
            self.key, self.value = (Tensor(buffer[:, :, :length]) for buffer in self._buffers)
        else:
            self.key, self.value = Tensor(self.key.data[rows]), Tensor(self.value.data[rows])


class MultiHeadAttention(Module):
    """Multi-head scaled dot-product attention, PyTorch's `nn.MultiheadAttention` semantics.

    Parameters: `in_proj` (Linear C -> 3C, rows = [W_q; W_k; W_v], i.e. PyTorch's
    `in_proj_weight`/`in_proj_bias`) and `out_proj` (Linear C -> C).

    forward(query, key=None, value=None, ...) -> (output [B, L, C], weights or None)
      key=None means self-attention (key = value = query); for cross-attention pass the
      memory as key (and value, which defaults to key).
      key_padding_mask [B, S]: True (or -inf) marks keys to ignore (padding), as PyTorch.
      attn_mask [L, S] or [B*H, L, S]: boolean True = NOT allowed (PyTorch's MHA
        convention, the opposite of F.scaled_dot_product_attention), or float, added to
        the scores.
      is_causal: query i attends to keys up to its own position. With a cache holding P
        earlier positions, query i sits at position P + i (the mask is bottom-right aligned).
      need_weights: also return the attention probabilities (after dropout, as PyTorch),
        averaged over heads [B, L, S] if average_attn_weights else per head [B, H, L, S].
      cache: a KVCache; the new keys/values are appended to it and attention runs over all.
      rotary: (cos, sin) [B or 1, 1, L, D/2] from nn.RotaryEmbedding: q and k are rotated
        (before k enters the cache, so cached keys keep their positions).
      tokens: a boolean [B, T] (True = a real token, False = padding) for packed input:
        query is then [N, C], the N real tokens of a padded batch in row order (x[tokens]
        of a [B, T, C] x), and so is the output. Only the attention itself sees the padded
        [B, T] layout; both projections run on the N rows alone (see BertModel's
        skip_padding). Plain self-attention only (no key, value, cache or rotary).
    A query that may attend to nothing gives NaN, as in PyTorch.

    num_kv_heads: fewer key/value heads than query heads (grouped-query attention, see the
    module docstring); in_proj rows are then [W_q (C); W_k (KVH D); W_v (KVH D)].
    out_bias: whether out_proj has a bias when it differs from the projection's (Qwen2 has
    q/k/v biases and none on the output).
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 batch_first: bool = True, num_kv_heads: int | None = None, out_bias: bool | None = None):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"MultiHeadAttention: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_kv_heads < 1 or num_heads % num_kv_heads:
            raise ValueError(f"MultiHeadAttention: num_heads {num_heads} is not a multiple of "
                             f"num_kv_heads {num_kv_heads}")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.num_kv_heads, self.kv_dim = num_kv_heads, num_kv_heads * (embed_dim // num_heads)
        self.dropout, self.batch_first = dropout, batch_first
        self.in_proj = Linear(embed_dim, embed_dim + 2 * self.kv_dim, bias=bias)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias if out_bias is None else out_bias)

    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None, *,
                key_padding_mask=None, attn_mask=None, is_causal: bool = False, need_weights: bool = False,
                average_attn_weights: bool = True, cache: KVCache | None = None, rotary=None, tokens=None):
        if tokens is not None:  # packed rows [N, C]: self-attention on the padded layout
            q, k, v = self._packed_projections(query, tokens, key, value, cache, rotary)  # 3 x [B, H, T, D]
            batch, length = tokens.shape
        else:
            if not self.batch_first:  # [T, B, C] -> [B, T, C]
                query, key, value = (ops.swapaxes(t, 0, 1) if t is not None else None for t in (query, key, value))
            if query.ndim != 3 or query.shape[-1] != self.embed_dim:
                raise ValueError(
                    f"MultiHeadAttention: expected query [B, L, {self.embed_dim}], got shape {query.shape}")
            batch, length, channels = query.shape
            if key is None and value is None and self.num_kv_heads == self.num_heads:  # one GEMM for q, k and v
                q, k, v = F.split_heads(self.in_proj(query), self.num_heads, parts=3)  # [B, T, 3C] -> 3 x [B, H, T, D]
            elif key is None and value is None:  # grouped: [B, T, C + 2 KVH D] -> q [B, H, T, D], k, v [B, KVH, T, D]
                q, k, v = ops.split(self.in_proj(query), [channels, channels + self.kv_dim], axis=-1)
                q, k, v = F.split_heads(q, self.num_heads)[0], F.split_heads(k, self.num_kv_heads)[0], \
                    F.split_heads(v, self.num_kv_heads)[0]
            else:
                q, k, v = (F.split_heads(t, heads)[0] for t, heads in zip(
                    self._project(query, key, value), (self.num_heads, self.num_kv_heads, self.num_kv_heads)))
            if rotary is not None:
                q, k = F.apply_rotary(q, *rotary), F.apply_rotary(k, *rotary)
            if cache is not None:
                k, v = cache.update(k, v)  # [B, KVH, S, D], S = cached + new positions
        source = k.shape[2]

        mask = self._combined_mask(batch, length, source, key_padding_mask, attn_mask, is_causal, q)
        if self.num_kv_heads != self.num_heads:
            out, weights = self._grouped_attention(q, k, v, mask, need_weights)
        else:
            result = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.dropout, training=self.training, return_weights=need_weights
            )  # [B, H, L, D] (and the weights [B, H, L, S])
            out, weights = result if need_weights else (result, None)
        out = F.merge_heads(out)  # [B, H, L, D] -> [B, L, C]
        if tokens is not None:
            out = ops.getitem(out, tokens)  # [B, T, C] -> [N, C]: the real tokens' rows again
        out = self.out_proj(out)
        if not self.batch_first and tokens is None:
            out = ops.swapaxes(out, 0, 1)
        if not need_weights:
            return out, None
        return out, (ops.mean(weights, axis=1) if average_attn_weights else weights)

    def _packed_projections(self, packed: Tensor, tokens, key, value, cache, rotary) -> tuple:
        """q, k, v [B, H, T, D] of packed rows [N, C] (see `tokens` above): the projection's
        GEMM runs on the N rows alone, then its rows go to their places in the padded batch."""
        if key is not None or value is not None or cache is not None or rotary is not None \
                or self.num_kv_heads != self.num_heads:
            raise ValueError("MultiHeadAttention: packed input (tokens=) supports plain self-attention only "
                             "(no key, value, cache, rotary or grouped heads)")
        if tokens.ndim != 2 or tokens.dtype != bool:
            raise ValueError(f"MultiHeadAttention: tokens must be a boolean [B, T] mask, got {tokens.dtype} "
                             f"of shape {tokens.shape}")
        count = int(tokens.sum())
        if packed.ndim != 2 or packed.shape != (count, self.embed_dim):
            raise ValueError(f"MultiHeadAttention: packed query must be [{count}, {self.embed_dim}] "
                             f"(the real tokens of tokens {tokens.shape}), got shape {packed.shape}")
        padded = ops.unpack_rows(self.in_proj(packed), tokens)  # [N, C] -> [N, 3C] -> [B, T, 3C], zeros at padding
        return F.split_heads(padded, self.num_heads, parts=3)  # 3 x [B, H, T, D]

    def _grouped_attention(self, q, k, v, mask, need_weights: bool):
        """Attention of q [B, H, L, D] over k, v [B, KVH, S, D] without repeating k and v:
        each group's G query heads become the rows of one [G*L, D] matrix."""
        batch, heads, length, dim = q.shape
        kv_heads, source = self.num_kv_heads, k.shape[2]
        groups = heads // kv_heads
        q = ops.reshape(q, (batch, kv_heads, groups * length, dim))  # [B, H, L, D] -> [B, KVH, G*L, D]
        result = F.scaled_dot_product_attention(
            q, k, v, attn_mask=None if mask is None else _grouped_mask(mask, kv_heads, groups, length),
            dropout_p=self.dropout, training=self.training, return_weights=need_weights,
        )  # [B, KVH, G*L, D] (and the weights [B, KVH, G*L, S])
        out, weights = result if need_weights else (result, None)
        out = ops.reshape(out, (batch, heads, length, dim))  # -> [B, H, L, D]
        if weights is not None:
            weights = ops.reshape(weights, (batch, heads, length, source))  # -> [B, H, L, S]
        return out, weights

    def _project(self, query, key, value):
        """q, k, v [B, T, C] for cross-attention: the three row blocks of in_proj."""
        if key is None:
            raise ValueError("MultiHeadAttention: value given without key")
        value = key if value is None else value
        c, kv = self.embed_dim, self.kv_dim
        for name, t in (("key", key), ("value", value)):
            if t.ndim != 3 or t.shape[0] != query.shape[0] or t.shape[-1] != c:
                raise ValueError(f"MultiHeadAttention: expected {name} [{query.shape[0]}, S, {c}], got shape {t.shape}")
        weight, bias = self.in_proj.weight, self.in_proj.bias

        def rows(start, stop):
            return weight[start:stop], (bias[start:stop] if bias is not None else None)

        q = F.linear(query, *rows(0, c))  # [B, L, C]
        if key is value:
            both = F.linear(key, *rows(c, c + 2 * kv))  # [B, S, C] -> [B, S, 2 KVH D]: k and v in one GEMM
            k, v = ops.split(both, 2, axis=-1)
        else:
            k, v = F.linear(key, *rows(c, c + kv)), F.linear(value, *rows(c + kv, c + 2 * kv))
        return q, k, v

    def _combined_mask(self, batch, length, source, key_padding_mask, attn_mask, is_causal, like: Tensor):
        """One mask for F.scaled_dot_product_attention: boolean 'may attend' [.., L, S] if all
        inputs are boolean, else an additive float mask (-inf where not allowed)."""
        xp = like.device.xp
        dtype = F.scores_dtype(like.dtype)  # float32 under mixed precision: masks need its range
        allowed, additive = None, None

        def restrict(keep):
            nonlocal allowed
            allowed = keep if allowed is None else allowed & keep

        def add(scores):
            nonlocal additive
            additive = scores if additive is None else additive + scores

        if is_causal and length > 1:
            # Bottom-right aligned: with source - length cached positions before the queries.
            # (A single query is the last position and may see every key: no mask needed,
            # which saves building one per layer for every generated token.)
            restrict(xp.tril(xp.ones((length, source), dtype=bool), k=source - length))
        if attn_mask is not None:
            m = data_of(attn_mask, like.device)
            if m.shape not in ((length, source), (batch * self.num_heads, length, source)):
                raise ValueError(f"MultiHeadAttention: attn_mask has shape {m.shape}, expected ({length}, {source}) "
                                 f"or ({batch * self.num_heads}, {length}, {source})")
            if m.ndim == 3:
                m = m.reshape(batch, self.num_heads, length, source)
            if m.dtype == bool:
                restrict(~m)
            else:
                add(m.astype(dtype))
        if key_padding_mask is not None:
            m = data_of(key_padding_mask, like.device)
            if m.shape != (batch, source):
                raise ValueError(
                    f"MultiHeadAttention: key_padding_mask has shape {m.shape}, expected ({batch}, {source})")
            m = m[:, None, None, :]  # [B, S] -> [B, 1, 1, S], broadcast over heads and queries
            if m.dtype == bool:
                restrict(~m)
            else:
                add(m.astype(dtype))
        if additive is None:
            return allowed
        if allowed is not None:
            additive = xp.where(allowed, additive, -np.inf).astype(dtype)
        return additive


def _grouped_mask(mask, kv_heads: int, groups: int, length: int):
    """A mask for scores [B, H, L, S] (broadcastable: [L, S], [B, 1, 1, S], [B, H, L, S] ...)
    laid out for the grouped scores [B, KVH, G*L, S]."""
    mask = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)  # [b, h, l, S], h in (1, H), l in (1, L)
    batch, heads, rows, source = mask.shape
    if heads == 1 and rows == 1:
        return mask  # the same for every query row: broadcasts as it is
    xp = array_module(mask)
    per_group = mask.reshape(batch, 1, 1, rows, source) if heads == 1 else \
        mask.reshape(batch, kv_heads, groups, rows, source)
    kv = 1 if heads == 1 else kv_heads
    return xp.broadcast_to(per_group, (batch, kv, groups, length, source)).reshape(batch, kv, groups * length, source)


def padding_mask(attention_mask, shape: tuple, dtype, device):
    """The additive key-padding mask [B, S] for an attention_mask of 1 (token) / 0 (padding).

    A large finite negative (not -inf), as Hugging Face uses: a query whose keys are all
    padding then gets harmless uniform weights instead of NaN. Shared by every model that
    takes an attention_mask (GPT, BERT).
    """
    mask = data_of(attention_mask, device)
    if mask.shape != tuple(shape):
        raise ValueError(f"attention_mask has shape {mask.shape}, expected {tuple(shape)}")
    return device.xp.where(mask.astype(bool), 0.0, np.finfo(dtype).min).astype(dtype)  # [B, S]
