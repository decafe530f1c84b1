"""Text generation: greedy, sampling (temperature, top-k, top-p), beam search, streaming.

The names and meanings follow Hugging Face's `generate`, and so do the details that decide
which tokens come out (the order of the logit processors, beam-search bookkeeping), so that
the same checkpoint gives the same ids.

How a step works. A *decoder* wraps the model and keeps what it needs between steps: for
GPT a key/value cache preallocated for the whole generation, one per layer, so each new
token costs one position of work (`use_cache=False` recomputes the whole sequence every
step: the reference the cache is tested against); for the LSTM its (h, c) state. Each step
turns the last logits into scores (repetition penalty, then temperature / top-k / top-p
when sampling), picks tokens, and feeds them back.
"""

from __future__ import annotations

import numpy as np

from . import nn
from .autograd import Tensor, no_grad

_NEG_INF = -np.inf


# ---------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------
def _check_arguments(ids, max_new_tokens, max_length, do_sample, temperature, top_k, top_p, repetition_penalty,
                     num_beams, num_return_sequences, context) -> int:
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise ValueError(f"generate: the prompt is empty; input_ids must have shape [B, T] with T >= 1, "
                         f"got {ids.shape}")
    prompt = ids.shape[1]
    if max_new_tokens is None and max_length is None:
        raise ValueError("generate: pass max_new_tokens (or max_length, counting the prompt)")
    if max_new_tokens is None:
        max_new_tokens = max_length - prompt
    if max_new_tokens < 1:
        raise ValueError(f"generate: nothing to generate (max_new_tokens={max_new_tokens} for a prompt of {prompt})")
    if context is not None and prompt > context:
        raise ValueError(f"generate: the prompt has {prompt} tokens, longer than the model's context ({context})")
    if context is not None and prompt + max_new_tokens > context:
        raise ValueError(f"generate: prompt ({prompt}) + max_new_tokens ({max_new_tokens}) exceeds the model's "
                         f"context ({context}); generate fewer tokens or shorten the prompt")
    if do_sample and not temperature > 0:
        raise ValueError(f"generate: temperature must be > 0 when sampling, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"generate: top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"generate: top_p must be in (0, 1], got {top_p}")
    if repetition_penalty <= 0:
        raise ValueError(f"generate: repetition_penalty must be > 0, got {repetition_penalty}")
    if num_beams < 1 or num_return_sequences < 1:
        raise ValueError("generate: num_beams and num_return_sequences must be >= 1")
    if num_return_sequences > num_beams and num_beams > 1:
        raise ValueError(f"generate: num_return_sequences ({num_return_sequences}) > num_beams ({num_beams})")
    if num_return_sequences > 1 and num_beams == 1 and not do_sample:
        raise ValueError("generate: several return sequences need do_sample=True or num_beams > 1 "
                         "(greedy would repeat one)")
    return max_new_tokens


# ---------------------------------------------------------------------------------------
# Logit processing (Hugging Face's order: repetition penalty, then the sampling warpers)
# ---------------------------------------------------------------------------------------
def apply_repetition_penalty(scores: np.ndarray, sequences: np.ndarray, penalty: float) -> np.ndarray:
    """Make tokens already in a row less likely: positive scores / penalty, negative * penalty."""
    if penalty == 1.0:
        return scores
    rows = np.arange(scores.shape[0])[:, None]
    seen = scores[rows, sequences]  # [N, L]
    scores[rows, sequences] = np.where(seen < 0, seen * penalty, seen / penalty)
    return scores


def top_k_filter(scores: np.ndarray, k: int) -> np.ndarray:
    """Keep scores >= the k-th largest (ties at the boundary kept); the rest become -inf."""
    k = min(k, scores.shape[-1])
    kth = np.partition(scores, -k, axis=-1)[:, -k][:, None]
    return np.where(scores < kth, _NEG_INF, scores)


def top_p_filter(scores: np.ndarray, p: float) -> np.ndarray:
    """Nucleus filtering: keep the most probable tokens until their total probability
    reaches p (always at least one); the rest become -inf."""
    order = np.argsort(scores, axis=-1, kind="stable")  # ascending
    sorted_scores = np.take_along_axis(scores, order, axis=-1)
    probabilities = _softmax(sorted_scores)
    cumulative = np.cumsum(probabilities, axis=-1)
    remove_sorted = cumulative <= 1.0 - p  # the low tail whose mass is at most 1 - p
    remove_sorted[:, -1] = False
    remove = np.zeros_like(remove_sorted)
    np.put_along_axis(remove, order, remove_sorted, axis=-1)
    return np.where(remove, _NEG_INF, scores)


def _softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _warp(scores, temperature, top_k, top_p):
    if temperature != 1.0:
        scores = scores / temperature
    if top_k is not None:
        scores = top_k_filter(scores, top_k)
    if top_p is not None and top_p < 1.0:
        scores = top_p_filter(scores, top_p)
    return scores


# ---------------------------------------------------------------------------------------
# Decoders: the model side of a generation loop
# ---------------------------------------------------------------------------------------
class CausalDecoder:
    """The decoder state of any causal LM whose forward takes `(ids, attention_mask=,
    caches=)` and returns a ModelOutput with logits [B, T, V] (GPT, Llama): one preallocated KV cache per layer.

    A model hands one out from its `decoder(capacity, use_cache)` method; the generation
    loops only call `start`, `advance` and `reorder`, so they never name a model class.
    """

    def __init__(self, model, num_layers: int, capacity: int, use_cache: bool):
        self.model, self.use_cache, self.capacity = model, use_cache, capacity
        self.caches = [nn.KVCache(capacity) for _ in range(num_layers)] if use_cache else None
        self.ids = None  # the whole sequence so far, for the uncached path

    def start(self, ids: np.ndarray, attention_mask: np.ndarray | None) -> np.ndarray:
        """Run the prompt [N, T]; return the next-token logits [N, V] (host, float64)."""
        self.ids = ids
        logits = self.model(ids, attention_mask=attention_mask, caches=self.caches).logits
        return last_logits(logits)

    def advance(self, tokens: np.ndarray, attention_mask: np.ndarray | None) -> np.ndarray:
        """Feed one new token per row [N]; return the next-token logits [N, V]."""
        self.ids = np.concatenate([self.ids, tokens[:, None]], axis=1)
        if self.use_cache:
            logits = self.model(tokens[:, None], attention_mask=attention_mask, caches=self.caches).logits
        else:
            logits = self.model(self.ids, attention_mask=attention_mask).logits
        return last_logits(logits)

    def reorder(self, rows: np.ndarray) -> None:
        """Keep the rows of the surviving beams (row i <- old row rows[i])."""
        self.ids = self.ids[rows]
        for cache in self.caches or ():
            cache.reorder(rows)


def last_logits(logits) -> np.ndarray:
    logits = getattr(logits, "logits", logits)  # a ModelOutput or the logits Tensor itself
    return logits[:, -1].numpy().astype(np.float64)  # [N, V] on the host, float64 for stable sums


def _decoder_for(model, capacity: int, use_cache: bool):
    if not hasattr(model, "decoder"):
        raise TypeError(f"generate: {type(model).__name__} has no decoder(capacity, use_cache) method")
    return model.decoder(capacity, use_cache)


# ---------------------------------------------------------------------------------------
# The generation loops
# ---------------------------------------------------------------------------------------
class _StopStrings:
    """Finishes a row once its generated text contains one of the stop strings."""

    def __init__(self, stop, tokenizer, prompt_length: int):
        self.stop = [stop] if isinstance(stop, str) else list(stop or [])
        if self.stop and tokenizer is None:
            raise ValueError("generate: stop strings need tokenizer= to turn tokens into text")
        self.tokenizer, self.prompt_length = tokenizer, prompt_length

    def hits(self, sequences: np.ndarray) -> np.ndarray:
        if not self.stop:
            return np.zeros(len(sequences), dtype=bool)
        texts = [self.tokenizer.decode(row[self.prompt_length:].tolist()) for row in sequences]
        return np.array([any(s in text for s in self.stop) for text in texts])


def generate_stream(model, input_ids, max_new_tokens=None, max_length=None, do_sample=False, temperature=1.0,
                    top_k=None, top_p=None, repetition_penalty=1.0, num_return_sequences=1, eos_token_id=None,
                    pad_token_id=None, stop=None, tokenizer=None, seed=None, attention_mask=None, use_cache=True):
    """Greedy or sampled generation, yielding the new tokens of every row at each step ([N] ints).

    Rows that have finished (eos or a stop string) get `pad_token_id` (default: eos) from then on.
    """
    ids = _as_ids(input_ids)
    context = getattr(getattr(model, "config", None), "block_size", None)
    max_new_tokens = _check_arguments(ids, max_new_tokens, max_length, do_sample, temperature, top_k, top_p,
                                      repetition_penalty, 1, num_return_sequences, context)
    mask = None if attention_mask is None else np.asarray(_as_ids(attention_mask), dtype=np.int64)
    if num_return_sequences > 1:
        ids = np.repeat(ids, num_return_sequences, axis=0)
        mask = None if mask is None else np.repeat(mask, num_return_sequences, axis=0)
    eos = _eos_set(eos_token_id)
    pad = pad_token_id if pad_token_id is not None else (min(eos) if eos else 0)
    rng = np.random.default_rng(seed) if seed is not None else model_rng(model)
    stops = _StopStrings(stop, tokenizer, ids.shape[1])
    with nn.utils.eval_mode(model), no_grad():
        decoder = _decoder_for(model, ids.shape[1] + max_new_tokens, use_cache)
        logits = decoder.start(ids, mask)
        sequences = ids
        finished = np.zeros(len(ids), dtype=bool)
        for step in range(max_new_tokens):
            scores = apply_repetition_penalty(logits, sequences, repetition_penalty)
            if do_sample:
                probabilities = _softmax(_warp(scores, temperature, top_k, top_p))
                tokens = _sample_rows(probabilities, rng)
            else:
                tokens = scores.argmax(axis=-1)
            tokens = np.where(finished, pad, tokens)
            sequences = np.concatenate([sequences, tokens[:, None]], axis=1)
            yield tokens
            finished |= np.isin(tokens, list(eos)) | stops.hits(sequences)
            if finished.all() or step == max_new_tokens - 1:
                return
            if mask is not None:
                mask = np.concatenate([mask, np.ones((len(mask), 1), dtype=mask.dtype)], axis=1)
            logits = decoder.advance(tokens, mask)


def generate(model, input_ids, max_new_tokens=None, max_length=None, do_sample=False, temperature=1.0, top_k=None,
             top_p=None, repetition_penalty=1.0, num_return_sequences=1, num_beams=1, length_penalty=1.0,
             eos_token_id=None, pad_token_id=None, stop=None, tokenizer=None, seed=None, attention_mask=None,
             use_cache=True, early_stopping=False) -> np.ndarray:
    """Token ids [N, prompt + new] (prompt included), one row per returned sequence, as HF's generate."""
    if num_beams > 1:
        return beam_search(model, input_ids, max_new_tokens=max_new_tokens, max_length=max_length,
                           num_beams=num_beams, num_return_sequences=num_return_sequences,
                           length_penalty=length_penalty, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                           repetition_penalty=repetition_penalty, attention_mask=attention_mask, use_cache=use_cache,
                           early_stopping=early_stopping)
    ids = _as_ids(input_ids)
    if num_return_sequences > 1:
        ids = np.repeat(ids, num_return_sequences, axis=0)
    steps = list(generate_stream(model, input_ids, max_new_tokens, max_length, do_sample, temperature, top_k, top_p,
                                 repetition_penalty, num_return_sequences, eos_token_id, pad_token_id, stop,
                                 tokenizer, seed, attention_mask, use_cache))
    return np.concatenate([ids, np.stack(steps, axis=1)], axis=1)


def stream_text(model, tokenizer, prompt: str, **kwargs):
    """Yield the continuation of `prompt` as text while it is made; never splits a UTF-8
    character (the tokenizer's streaming decoder holds incomplete bytes back)."""
    ids = np.array([tokenizer.encode(prompt)], dtype=np.int64)
    decoder = tokenizer.stream_decoder()
    for tokens in generate_stream(model, ids, tokenizer=tokenizer, **kwargs):
        piece = decoder.push(int(tokens[0]))
        if piece:
            yield piece
    tail = decoder.flush()
    if tail:
        yield tail


def beam_search(model, input_ids, max_new_tokens=None, max_length=None, num_beams=4, num_return_sequences=1,
                length_penalty=1.0, eos_token_id=None, pad_token_id=None, repetition_penalty=1.0,
                attention_mask=None, use_cache=True, early_stopping=False) -> np.ndarray:
    """Beam search with Hugging Face's bookkeeping.

    At each step every running beam proposes continuations; the best 2 * num_beams (by
    summed log-probability) are kept. Of those, the ones that end (eos, or the length
    limit) and rank among the top num_beams enter the finished pool with score
    sum_logprob / generated_length ** length_penalty; the best num_beams unfinished ones
    keep running. The search stops when no running beam can beat the worst finished one
    (early_stopping=False: judged at the current length), or at the length limit.
    """
    ids = _as_ids(input_ids)
    context = getattr(getattr(model, "config", None), "block_size", None)
    max_new_tokens = _check_arguments(ids, max_new_tokens, max_length, False, 1.0, None, None, repetition_penalty,
                                      num_beams, num_return_sequences, context)
    batch, prompt = ids.shape
    eos = _eos_set(eos_token_id)
    pad = pad_token_id if pad_token_id is not None else (min(eos) if eos else 0)
    keep = max(2, 1 + len(eos)) * num_beams  # candidates kept per step
    total = prompt + max_new_tokens

    flat = np.repeat(ids, num_beams, axis=0)  # [B*K, prompt]
    mask = None if attention_mask is None else np.repeat(np.asarray(_as_ids(attention_mask)), num_beams, axis=0)
    running = np.full((batch, num_beams, total), pad, dtype=np.int64)
    running[:, :, :prompt] = ids[:, None, :]
    running_scores = np.zeros((batch, num_beams))
    running_scores[:, 1:] = -1e9  # all beams start equal: expand only the first one
    finished = np.full((batch, num_beams, total), pad, dtype=np.int64)
    finished_scores = np.full((batch, num_beams), -1e9)
    finished_lengths = np.zeros((batch, num_beams), dtype=np.int64)
    is_finished = np.zeros((batch, num_beams), dtype=bool)
    improvable = np.ones((batch, 1), dtype=bool)
    top_mask = np.arange(keep) < num_beams

    with nn.utils.eval_mode(model), no_grad():
        decoder = _decoder_for(model, total, use_cache)
        logits = decoder.start(flat, mask)
        length = prompt
        while True:
            sequences = running[:, :, :length].reshape(batch * num_beams, length)
            log_probs = apply_repetition_penalty(_log_softmax(logits), sequences, repetition_penalty)
            vocab = log_probs.shape[-1]
            totals = (log_probs.reshape(batch, num_beams, vocab) + running_scores[:, :, None]).reshape(batch, -1)
            top = np.argsort(-totals, axis=-1, kind="stable")[:, :keep]  # [B, keep]
            top_scores = np.take_along_axis(totals, top, axis=-1)
            source_beam, token = top // vocab, top % vocab
            candidates = np.take_along_axis(running, source_beam[:, :, None], axis=1)  # [B, keep, total]
            candidates[:, :, length] = token
            ends = np.isin(token, list(eos)) | (length + 1 >= total)

            # the best num_beams unfinished candidates keep running
            live_scores = top_scores - 1e9 * ends
            order = np.argsort(-live_scores, axis=-1, kind="stable")[:, :num_beams]
            running = np.take_along_axis(candidates, order[:, :, None], axis=1)
            running_scores = np.take_along_axis(live_scores, order, axis=-1)
            chosen_rows = np.take_along_axis(source_beam, order, axis=-1)  # beam each survivor came from

            # top-ranked candidates that ended join the finished pool if they beat it
            just_finished = ends & top_mask[None, :]
            penalized = top_scores / ((length + 1 - prompt) ** length_penalty)
            penalized = penalized - 1e9 * (~improvable) - 1e9 * (~just_finished)
            if early_stopping is True:
                penalized = penalized - 1e9 * is_finished.all(axis=-1, keepdims=True)
            pool = np.concatenate([finished, candidates], axis=1)
            pool_scores = np.concatenate([finished_scores, penalized], axis=1)
            pool_lengths = np.concatenate([finished_lengths, np.full(just_finished.shape, length + 1)], axis=1)
            pool_done = np.concatenate([is_finished, just_finished], axis=1)
            best = np.argsort(-pool_scores, axis=-1, kind="stable")[:, :num_beams]
            finished = np.take_along_axis(pool, best[:, :, None], axis=1)
            finished_scores = np.take_along_axis(pool_scores, best, axis=-1)
            finished_lengths = np.take_along_axis(pool_lengths, best, axis=-1)
            is_finished = np.take_along_axis(pool_done, best, axis=-1)

            length += 1
            # can a running beam still beat the worst finished one?
            best_running = running_scores[:, :1] / ((length - prompt) ** length_penalty)
            worst_finished = np.where(is_finished, finished_scores.min(axis=1, keepdims=True), -1e9)
            improvable &= np.any(best_running > worst_finished, axis=-1, keepdims=True)
            all_done = early_stopping is True and is_finished.all()
            if not improvable.any() or all_done or ends.all() or length >= total:
                break
            rows = (np.arange(batch)[:, None] * num_beams + chosen_rows).reshape(-1)
            decoder.reorder(rows)
            if mask is not None:
                mask = np.concatenate([mask[rows], np.ones((len(rows), 1), dtype=mask.dtype)], axis=1)
            logits = decoder.advance(running[:, :, length - 1].reshape(-1), mask)
    chosen = finished[:, :num_return_sequences].reshape(batch * num_return_sequences, total)
    longest = int(finished_lengths[:, :num_return_sequences].max())
    return chosen[:, :longest]


def model_rng(model):
    """The generator sampling uses when no seed is given: the model's device generator."""
    parameters = list(model.parameters())
    device = parameters[0].device if parameters else None
    rng = getattr(device, "rng", None)
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng()


def _sample_rows(probabilities: np.ndarray, rng) -> np.ndarray:
    """One token per row, drawn from each row's distribution (inverse CDF on one uniform)."""
    cumulative = np.cumsum(probabilities, axis=-1)
    draws = rng.random(len(probabilities)) * cumulative[:, -1]
    tokens = (cumulative < draws[:, None]).sum(axis=-1)
    return np.minimum(tokens, probabilities.shape[-1] - 1)


def _eos_set(eos_token_id) -> set:
    if eos_token_id is None:
        return set()
    return {int(eos_token_id)} if np.isscalar(eos_token_id) else {int(e) for e in eos_token_id}


def _as_ids(values) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.numpy().astype(np.int64)
    ids = np.asarray(values)
    if ids.ndim == 1:
        ids = ids[None, :]
    return ids.astype(np.int64)


class GenerationMixin:
    """`model.generate(...)`, `model.generate_stream(...)` for the causal LMs (GPT, LSTM)."""

    def generate(self, input_ids, **kwargs) -> np.ndarray:
        return generate(self, input_ids, **kwargs)

    def generate_stream(self, input_ids, **kwargs):
        return generate_stream(self, input_ids, **kwargs)
