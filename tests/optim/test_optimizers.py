"""Optimizers against torch.optim: 100-step trajectories in float64 (tolerance 1e-10) with
schedules and gradient clipping, parameter groups, and checkpoint round trips."""

import json
import math

import numpy as np
import pytest

import minilm as ml
from minilm import nn, optim
from minilm.optim import lr_scheduler
from minilm.serialization import load_file, save_file

from ..helpers import oracle

torch = oracle("torch", reason="PyTorch is the oracle for optimizer trajectories")

STEPS = 100
TOLERANCE = 1e-10  # float64: the two implementations differ only in rounding order
DEVICE = ml.default_device()  # ml.tensor keeps NumPy data on the CPU unless told otherwise

CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.2, weight_decay=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.02, betas=(0.85, 0.995), weight_decay=0.3)),
]


def schedule(step):
    """Warmup for 10 steps, then cosine decay to 10%: the usual LM schedule."""
    return lr_scheduler.warmup_cosine(step, warmup_steps=10, total_steps=STEPS, min_ratio=0.1)


class Problem:
    """A small two-layer regression, the same in both frameworks: params W1, b1, w2."""

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        self.x = rng.standard_normal((16, 5))
        self.y = rng.standard_normal(16)
        self.initial = [rng.standard_normal((5, 4)), rng.standard_normal(4) * 0.1, rng.standard_normal(4)]

    def minilm_params(self):
        return [nn.Parameter(ml.tensor(a.copy(), dtype=ml.float64, device=DEVICE)) for a in self.initial]

    def torch_params(self):
        return [torch.tensor(a.copy(), requires_grad=True) for a in self.initial]

    def minilm_loss(self, params):
        w1, b1, w2 = params
        h = (ml.tensor(self.x, device=DEVICE) @ w1 + b1).tanh()
        return ((h @ w2 - ml.tensor(self.y, device=DEVICE)) ** 2).mean()

    def torch_loss(self, params):
        w1, b1, w2 = params
        h = torch.tanh(torch.from_numpy(self.x) @ w1 + b1)
        return ((h @ w2 - torch.from_numpy(self.y)) ** 2).mean()


def minilm_run(problem, params, opt, scheduler, clip, steps):
    for _ in range(steps):
        opt.zero_grad()
        problem.minilm_loss(params).backward()
        if clip:
            nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        if scheduler:
            scheduler.step()


@pytest.fixture(autouse=True)
def float64_default():
    previous = ml.get_default_dtype()
    ml.set_default_dtype(ml.float64)
    yield
    ml.set_default_dtype(previous)


@pytest.mark.parametrize("scheduled_and_clipped", [False, True], ids=["plain", "schedule+clip"])
@pytest.mark.parametrize("name, options", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_trajectory_matches_torch(name, options, scheduled_and_clipped):
    problem = Problem()
    ours, theirs = problem.minilm_params(), problem.torch_params()
    opt = getattr(optim, name)(ours, **options)
    torch_opt = getattr(torch.optim, name)(theirs, **options)
    scheduler = lr_scheduler.LambdaLR(opt, schedule) if scheduled_and_clipped else None
    torch_scheduler = torch.optim.lr_scheduler.LambdaLR(torch_opt, schedule) if scheduled_and_clipped else None
    clip = 0.5 if scheduled_and_clipped else None
    clipped_steps = 0
    for step in range(STEPS):
        opt.zero_grad()
        problem.minilm_loss(ours).backward()
        torch_opt.zero_grad()
        problem.torch_loss(theirs).backward()
        if clip:
            norm = nn.utils.clip_grad_norm_(ours, clip)
            torch_norm = torch.nn.utils.clip_grad_norm_(theirs, clip)
            np.testing.assert_allclose(norm.item(), torch_norm.item(), rtol=TOLERANCE)
            clipped_steps += norm.item() > clip
        opt.step()
        torch_opt.step()
        if scheduler:
            scheduler.step()
            torch_scheduler.step()
            assert scheduler.get_last_lr() == pytest.approx(torch_scheduler.get_last_lr(), rel=1e-15)
        for p, q in zip(ours, theirs):
            np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=TOLERANCE, atol=TOLERANCE,
                                       err_msg=f"{name} {options} diverged from torch at step {step}")
    if clip:
        assert clipped_steps > 0, "the test should exercise clipping"


def test_parameter_groups_match_torch():
    problem = Problem(seed=1)
    ours, theirs = problem.minilm_params(), problem.torch_params()
    groups = lambda ps: [{"params": ps[:1], "lr": 0.02, "weight_decay": 0.5}, {"params": ps[1:]}]  # noqa: E731
    opt = optim.AdamW(groups(ours), lr=0.01, weight_decay=0.0)
    torch_opt = torch.optim.AdamW(groups(theirs), lr=0.01, weight_decay=0.0)
    for _ in range(50):
        opt.zero_grad()
        problem.minilm_loss(ours).backward()
        opt.step()
        torch_opt.zero_grad()
        problem.torch_loss(theirs).backward()
        torch_opt.step()
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=TOLERANCE, atol=TOLERANCE)


def _through_files(state: dict, tmp_path, name: str) -> dict:
    """Write an optimizer/scheduler state dict as safetensors (arrays) + JSON (the rest), read it back."""
    arrays, numbers = {}, {"state": {}, "param_groups": state["param_groups"]}
    for index, entries in state["state"].items():
        numbers["state"][index] = {}
        for key, value in entries.items():
            if isinstance(value, ml.Tensor):
                arrays[f"{index}.{key}"] = value
            else:
                numbers["state"][index][key] = value
    save_file(arrays, tmp_path / f"{name}.safetensors")
    (tmp_path / f"{name}.json").write_text(json.dumps(numbers), encoding="utf-8")
    loaded = json.loads((tmp_path / f"{name}.json").read_text(encoding="utf-8"))
    for key, array in load_file(tmp_path / f"{name}.safetensors").items():
        index, field = key.split(".", 1)
        loaded["state"][index][field] = array
    return loaded


@pytest.mark.parametrize("name, options", [CONFIGS[3], CONFIGS[5], CONFIGS[7]], ids=["SGD", "Adam", "AdamW"])
def test_state_dict_round_trip_continues_the_same_trajectory(name, options, tmp_path):
    problem = Problem(seed=2)
    reference = problem.minilm_params()
    opt = getattr(optim, name)(reference, **options)
    scheduler = lr_scheduler.WarmupCosineLR(opt, warmup_steps=5, total_steps=60)
    minilm_run(problem, reference, opt, scheduler, clip=1.0, steps=30)
    saved_params = [p.numpy().copy() for p in reference]
    saved_opt = _through_files(opt.state_dict(), tmp_path, "optimizer")
    saved_scheduler = json.loads(json.dumps(scheduler.state_dict()))
    minilm_run(problem, reference, opt, scheduler, clip=1.0, steps=30)

    resumed = [nn.Parameter(ml.tensor(a, device=DEVICE)) for a in saved_params]
    # A fresh optimizer with different options: everything must come from the checkpoint.
    opt2 = getattr(optim, name)(resumed, lr=123.0)
    scheduler2 = lr_scheduler.WarmupCosineLR(opt2, warmup_steps=5, total_steps=60)
    opt2.load_state_dict(saved_opt)
    scheduler2.load_state_dict(saved_scheduler)
    minilm_run(problem, resumed, opt2, scheduler2, clip=1.0, steps=30)
    for p, q in zip(reference, resumed):
        np.testing.assert_array_equal(p.numpy(), q.numpy())


def test_state_dict_holds_copies_and_plain_numbers():
    params = [nn.Parameter(ml.tensor([1.0, 2.0]))]
    opt = optim.Adam(params, lr=0.1)
    params[0].grad = ml.tensor([0.5, -0.5])
    opt.step()
    state = opt.state_dict()
    assert state["state"][0]["step"] == 1
    assert set(state["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    assert state["param_groups"][0]["params"] == [0]
    before = state["state"][0]["exp_avg"].numpy().copy()
    opt.step()
    np.testing.assert_array_equal(state["state"][0]["exp_avg"].numpy(), before)
    json.dumps(state["param_groups"])


def test_load_state_dict_rejects_a_different_layout():
    params = [nn.Parameter(ml.tensor([1.0])), nn.Parameter(ml.tensor([2.0]))]
    opt = optim.SGD(params, lr=0.1)
    other = optim.SGD([{"params": params[:1]}, {"params": params[1:]}], lr=0.1)
    with pytest.raises(ValueError, match="parameter groups"):
        opt.load_state_dict(other.state_dict())


def test_step_bumps_the_version_so_stale_graphs_fail():
    w = nn.Parameter(ml.tensor([1.0, 2.0]))
    opt = optim.SGD([w], lr=0.1)
    (w * w).sum().backward()
    stale = (w * w).sum()  # saves w
    opt.step()
    with pytest.raises(ml.GraphError, match="modified in place"):
        stale.backward()


def test_zero_grad_and_skipping_params_without_grad():
    a, b = nn.Parameter(ml.tensor([1.0])), nn.Parameter(ml.tensor([1.0]))
    opt = optim.AdamW([a, b], lr=0.1)
    a.grad = ml.tensor([1.0])
    opt.step()
    assert b.numpy()[0] == 1.0 and a.numpy()[0] != 1.0
    opt.zero_grad(set_to_none=False)
    assert a.grad.numpy()[0] == 0.0
    opt.zero_grad()
    assert a.grad is None


def test_invalid_arguments_are_rejected_with_messages():
    p = nn.Parameter(ml.tensor([1.0]))
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="more than once"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([])
    with pytest.raises(ValueError, match="unknown options"):
        optim.Adam([{"params": [p], "momentum": 0.9}])


def test_param_groups_no_decay_puts_biases_norms_and_embeddings_apart():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(10, 4)
            self.ln = nn.LayerNorm(4)
            self.fc = nn.Linear(4, 4)
            self.head = nn.Linear(4, 10, bias=False)
            self.head.weight = self.wte.weight  # tied: an embedding, so not decayed

    model = Tiny()
    decay, no_decay = optim.param_groups_no_decay(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert [id(p) for p in decay["params"]] == [id(model.fc.weight)]
    assert {id(p) for p in no_decay["params"]} == {id(model.wte.weight), id(model.ln.weight), id(model.ln.bias),
                                                   id(model.fc.bias)}
    opt = optim.AdamW(optim.param_groups_no_decay(model, 0.1))
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_adamw_keeps_float32_and_allocates_no_state_per_step():
    ml.set_default_dtype(ml.float32)
    w = nn.Parameter(ml.randn(8, 8))
    opt = optim.AdamW([w], lr=1e-3)
    for _ in range(3):
        w.grad = ml.randn(8, 8)
        opt.step()
    assert w.dtype == np.float32
    assert all(v.dtype == np.float32 for v in opt.state[w].values() if hasattr(v, "dtype"))
    assert len(opt._scratch) <= 1  # one reused buffer, or none where a fused GPU kernel runs the update


def test_clip_grad_value_and_norm_types():
    ps = [nn.Parameter(ml.tensor([0.0, 0.0])), nn.Parameter(ml.tensor([0.0]))]
    ps[0].grad, ps[1].grad = ml.tensor([3.0, -4.0]), ml.tensor([12.0])
    tps = [torch.zeros(n, dtype=torch.float64, requires_grad=True) for n in (2, 1)]
    for norm_type in (1.0, 2.0, 3.0, math.inf):
        for p, q in zip(ps, tps):
            q.grad = torch.from_numpy(p.grad.numpy().copy())
        saved = [p.grad.numpy().copy() for p in ps]
        norm = nn.utils.clip_grad_norm_(ps, 2.0, norm_type=norm_type)
        torch_norm = torch.nn.utils.clip_grad_norm_(tps, 2.0, norm_type=norm_type)
        np.testing.assert_allclose(norm.item(), torch_norm.item(), rtol=1e-12)
        for p, q in zip(ps, tps):
            np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-12)
        for p, s in zip(ps, saved):
            p.grad = ml.tensor(s, device=DEVICE)
    nn.utils.clip_grad_value_(ps, 3.5)
    np.testing.assert_array_equal(ps[0].grad.numpy(), [3.0, -3.5])
    np.testing.assert_array_equal(ps[1].grad.numpy(), [3.5])
    assert nn.utils.clip_grad_norm_([nn.Parameter(ml.tensor([1.0]))], 1.0).item() == 0.0
