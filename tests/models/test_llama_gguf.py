"""Llama from GGUF files: tiny files written by the `gguf` package from transformers models
(llama.cpp's layout: q/k rows permuted, tied output left out), and the real SmolLM2-135M."""

import numpy as np
import pytest

from minilm.models import CheckpointError, Llama
from minilm.tokenizers import BPETokenizer
from tests.helpers import smollm2_gguf_path
from tests.models.test_llama import _ids, _reference_model, assert_logits_match

torch = pytest.importorskip("torch", reason="PyTorch is the reference for Llama parity")
transformers = pytest.importorskip("transformers", reason="transformers provides the reference Llama")
gguf = pytest.importorskip("gguf", reason="the gguf package writes the test files")


def _llama_cpp_permute(weight, heads):
    """The row order llama.cpp's converter gives a llama model's q and k projections."""
    pairs = weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
    return pairs.swapaxes(1, 2).reshape(weight.shape)


def write_gguf(reference, path):
    """`reference` (a transformers Llama / Qwen2) as llama.cpp's converter would write it, in F32."""
    c = reference.config
    arch = c.model_type
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_rope_freq_base(c.rope_parameters["rope_theta"])
    writer.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    per_layer = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
                 "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
                 "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for name, tensor in reference.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue  # llama.cpp leaves a tied output out
        if name.startswith("model.layers."):
            _, _, layer, rest = name.split(".", 3)
            module, kind = rest.rsplit(".", 1)
            target = f"blk.{layer}.{per_layer[module]}.{kind}"
        else:
            target = names[name]
        array = tensor.detach().numpy().astype(np.float32)
        if arch == "llama" and ".attn_q." in target:
            array = _llama_cpp_permute(array, c.num_attention_heads)
        elif arch == "llama" and ".attn_k." in target:
            array = _llama_cpp_permute(array, c.num_key_value_heads)
        writer.add_tensor(target, array)
    if c.rope_parameters.get("rope_type", "default") != "default":
        # llama.cpp writes Llama 3's frequency scaling as per-pair divisors of the base frequencies
        head_dim = c.hidden_size // c.num_attention_heads
        base = 1.0 / c.rope_parameters["rope_theta"] ** (np.arange(0, head_dim, 2) / head_dim)
        writer.add_tensor("rope_freqs.weight", (base / reference.model.rotary_emb.inv_freq.numpy()).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("variant", ["llama-gqa", "llama3-tied", "qwen2"])
def test_tiny_gguf_logits_equal_transformers(variant, tmp_path):
    reference = _reference_model(variant)
    path = tmp_path / "tiny.gguf"
    write_gguf(reference, path)
    model = Llama.from_pretrained(path)
    assert model.config.tie_word_embeddings == reference.config.tie_word_embeddings
    assert_logits_match(model, reference, _ids())


def test_gguf_of_another_architecture_is_named(tmp_path):
    writer = gguf.GGUFWriter(str(tmp_path / "x.gguf"), "mamba")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(CheckpointError, match="general.architecture 'mamba'"):
        Llama.from_pretrained(tmp_path / "x.gguf")


# ------------------------------------------------------------------ the real SmolLM2-135M-Instruct
@pytest.fixture(scope="module")
def smollm2():
    path = smollm2_gguf_path()
    reference = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name).eval()
    tokenizer = BPETokenizer.from_pretrained(path)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True)
    return Llama.from_pretrained(path), reference, tokenizer, np.array([prompt])


def test_smollm2_logits_equal_transformers(smollm2):
    model, reference, _, prompt = smollm2
    assert_logits_match(model, reference, prompt, tolerance=1e-3)


def test_smollm2_greedy_chat_answer_equals_transformers(smollm2):
    model, reference, tokenizer, prompt = smollm2
    eos = tokenizer.eos_token_id
    expected = reference.generate(torch.tensor(prompt), max_new_tokens=12, do_sample=False, eos_token_id=eos,
                                  pad_token_id=eos).numpy()
    got = model.generate(prompt, max_new_tokens=12, eos_token_id=eos)
    np.testing.assert_array_equal(got, expected)
    assert "Paris" in tokenizer.decode(got[0, prompt.shape[1]:].tolist())
