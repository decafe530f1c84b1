"""LoRA adapters against PEFT: logits and adapter gradients of a tiny random Llama (float64),
adapter files read by each library from the other, merge/unmerge, parameter counts."""

import json

import numpy as np
import pytest

import minilm as ml
from minilm.models import Llama
from minilm.nn import lora
from tests.models.test_llama import _float64_reference

torch = pytest.importorskip("torch", reason="PyTorch runs the reference model")
transformers = pytest.importorskip("transformers", reason="transformers provides the reference Llama")
peft = pytest.importorskip("peft", reason="PEFT is the reference LoRA implementation")

VOCAB = 61
TARGETS = ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]  # fused (q, v of in_proj; up of gate_up) and whole


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=24, intermediate_size=40, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                                      rms_norm_eps=1e-5, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    return folder


def _reference(folder, monkeypatch):
    """transformers' Llama in float64 throughout (its RMSNorm and rotary tables run in float32
    otherwise, which alone differs from minilm by ~1e-8)."""
    base = transformers.LlamaForCausalLM.from_pretrained(folder)
    return _float64_reference(base, Llama.from_pretrained(folder), monkeypatch)


def _peft_model(folder, monkeypatch, targets=TARGETS, r=4, alpha=12):
    base = _reference(folder, monkeypatch)
    config = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0, task_type="CAUSAL_LM")
    model = peft.get_peft_model(base, config)
    torch.manual_seed(1)
    with torch.no_grad():  # B starts at zero; give it values so the update matters
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(0.3 * torch.randn_like(p))
    return model


def _minilm_model(folder, adapter_folder=None):
    model = Llama.from_pretrained(folder).to(dtype=np.float64)
    if adapter_folder is not None:
        lora.load_adapter(model, adapter_folder)
    return model


def _ids(seed=0):
    return np.random.default_rng(seed).integers(0, VOCAB, (2, 9))


def test_peft_adapter_gives_peft_logits_and_gradients(base_folder, tmp_path, monkeypatch):
    reference = _peft_model(base_folder, monkeypatch)
    reference.save_pretrained(tmp_path)
    model = _minilm_model(base_folder, tmp_path)
    ids = _ids()
    targets = np.roll(ids, -1, axis=1)

    targets[:, -1] = -100
    expected_logits = reference(input_ids=torch.tensor(ids)).logits
    expected_loss = torch.nn.functional.cross_entropy(expected_logits.reshape(-1, VOCAB),
                                                      torch.tensor(targets).reshape(-1))  # HF's own loss is float32
    expected_loss.backward()
    logits, loss = model(ids, targets=targets)
    loss.backward()
    np.testing.assert_allclose(logits.numpy(), expected_logits.detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(loss.item(), expected_loss.item(), rtol=1e-12)

    theirs = {name.replace(".default", ""): p for name, p in reference.named_parameters() if p.requires_grad}
    ours = lora.adapter_state_dict(model)
    assert sorted(ours) == sorted(theirs)  # PEFT's names, every adapter and nothing else
    modules = dict(model.named_modules())
    for name, (path, part) in model.lora_names.items():
        for matrix in ("A", "B"):
            grad = getattr(modules[path], f"lora_{matrix}")[part].weight.grad.numpy()
            expected = theirs[f"base_model.model.{name}.lora_{matrix}.weight"].grad.numpy()
            np.testing.assert_allclose(grad, expected, rtol=1e-9, atol=1e-12, err_msg=f"{name} lora_{matrix}")
    frozen = [n for n, p in model.named_parameters() if p.grad is not None and "lora_" not in n]
    assert frozen == []


def test_minilm_adapter_loads_in_peft(base_folder, tmp_path, monkeypatch):
    model = _minilm_model(base_folder)
    lora.add_adapters(model, lora.LoraConfig(r=3, lora_alpha=6, target_modules=["k_proj", "gate_proj", "o_proj"]))
    ml.manual_seed(3)
    with ml.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.2 * np.random.default_rng(len(name)).standard_normal(p.shape))
    lora.save_adapter(model, tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["peft_type"] == "LORA"

    base = _reference(base_folder, monkeypatch)
    reference = peft.PeftModel.from_pretrained(base, tmp_path)
    ids = _ids(1)
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor(ids)).logits.numpy()
    with ml.no_grad():
        got = model(ids).logits.numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)
    # and the update matters: the base model alone answers differently
    with torch.no_grad(), reference.disable_adapter():
        assert np.abs(reference(input_ids=torch.tensor(ids)).logits.numpy() - expected).max() > 1e-3


def test_regex_targets_as_peft_and_trainable_count(base_folder, capsys, monkeypatch):
    pattern = r"model\.layers\.1\.self_attn\.(q|v)_proj"
    reference = _peft_model(base_folder, monkeypatch, targets=pattern)
    model = lora.add_adapters(_minilm_model(base_folder), lora.LoraConfig(r=4, lora_alpha=12, target_modules=pattern))
    assert sorted(model.lora_names) == ["model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"]
    line = lora.print_trainable_parameters(model)
    reference.print_trainable_parameters()
    assert line == capsys.readouterr().out.strip().splitlines()[-1]  # PEFT's numbers and words


def test_merge_and_unmerge_keep_the_function(base_folder, monkeypatch):
    reference = _peft_model(base_folder, monkeypatch)
    model = _minilm_model(base_folder)
    lora.add_adapters(model, lora.LoraConfig(r=4, lora_alpha=12, target_modules=TARGETS))
    theirs = {n.replace(".default", ""): p.detach().numpy() for n, p in reference.named_parameters() if "lora_" in n}
    modules = dict(model.named_modules())
    with ml.no_grad():
        for name, (path, part) in model.lora_names.items():
            modules[path].lora_A[part].weight.copy_(theirs[f"base_model.model.{name}.lora_A.weight"])
            modules[path].lora_B[part].weight.copy_(theirs[f"base_model.model.{name}.lora_B.weight"])
    ids = _ids(2)
    before = model.state_dict()["blocks.0.attn.in_proj.weight"].numpy().copy()
    with ml.no_grad():
        adapted = model(ids).logits.numpy()
        lora.merge(model)
        merged = model(ids).logits.numpy()
        lora.unmerge(model)
        unmerged = model(ids).logits.numpy()
    np.testing.assert_allclose(merged, adapted, atol=1e-10)
    np.testing.assert_allclose(unmerged, adapted, atol=1e-10)
    np.testing.assert_allclose(model.state_dict()["blocks.0.attn.in_proj.weight"].numpy(), before, atol=1e-13)
    with torch.no_grad():
        expected = reference.merge_and_unload()(input_ids=torch.tensor(ids)).logits.numpy()
    lora.merge_and_unload(model)
    assert not any(isinstance(m, lora.LoRALinear) for m in model.modules())
    with ml.no_grad():
        np.testing.assert_allclose(model(ids).logits.numpy(), expected, atol=1e-10)


def test_fresh_adapters_leave_the_model_unchanged_and_freeze_the_base(base_folder):
    model = _minilm_model(base_folder)
    ids = _ids()
    with ml.no_grad():
        before = model(ids).logits.numpy()
    lora.add_adapters(model, lora.LoraConfig(r=2, target_modules=["q_proj"]))
    with ml.no_grad():
        np.testing.assert_array_equal(model(ids).logits.numpy(), before)  # B starts at zero
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == [f"blocks.{i}.attn.in_proj.lora_{m}.q_proj.weight" for i in range(2) for m in "AB"]
    a = dict(model.named_parameters())["blocks.0.attn.in_proj.lora_A.q_proj.weight"].numpy()
    bound = 1 / np.sqrt(24)  # kaiming_uniform(a=sqrt(5)) on fan_in 24, as PEFT
    assert np.abs(a).max() <= bound and np.abs(a).max() > 0.5 * bound


def test_bad_targets_and_configs_are_named(base_folder, tmp_path):
    model = _minilm_model(base_folder)
    with pytest.raises(ValueError, match="match no layer.*q_proj"):
        lora.add_adapters(model, lora.LoraConfig(target_modules=["query"]))
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                                              "target_modules": ["q_proj"], "use_dora": True}))
    with pytest.raises(lora.AdapterError, match="use_dora"):
        lora.load_adapter(model, tmp_path)
