"""An edited config.json must not make a loader build a model the weights cannot fill: the
sizes are checked against the weights' headers before anything is allocated (issue 16's
`n_layer: 1000000000` case, for the Llama family and the encoder-decoder Transformer too)."""

import json

import pytest

from minilm.models import CheckpointError, Llama, LlamaConfig, Transformer, TransformerConfig


def _edit_config(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config.update(changes)
    path.write_text(json.dumps(config), encoding="utf-8")


def _tiny_llama(folder):
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    Llama(config).save_pretrained(folder)


def test_a_llama_config_with_more_layers_than_the_weights_is_refused_before_building(tmp_path):
    _tiny_llama(tmp_path)
    assert Llama.from_pretrained(tmp_path).config.num_hidden_layers == 2  # the untouched folder loads
    _edit_config(tmp_path, num_hidden_layers=1_000_000_000)
    with pytest.raises(CheckpointError, match=r"num_hidden_layers 1000000000, but the weights hold 2 layers"):
        Llama.from_pretrained(tmp_path)


def test_a_llama_config_whose_vocabulary_differs_from_the_embeddings_is_refused(tmp_path):
    _tiny_llama(tmp_path)
    _edit_config(tmp_path, vocab_size=4096)
    with pytest.raises(CheckpointError, match=r"config.json does not match the weights: vocab_size 4096"):
        Llama.from_pretrained(tmp_path)


def test_a_transformer_config_with_more_layers_than_the_weights_is_refused_before_building(tmp_path):
    config = TransformerConfig.marian(vocab_size=40, d_model=16, encoder_layers=1, decoder_layers=1,
                                      encoder_attention_heads=2, decoder_attention_heads=2,
                                      encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32)
    Transformer(config).save_pretrained(tmp_path)
    _edit_config(tmp_path, decoder_layers=1_000_000_000)
    with pytest.raises(CheckpointError, match=r"decoder_layers 1000000000, but the weights hold 1 layers"):
        Transformer.from_pretrained(tmp_path)
