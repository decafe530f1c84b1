"""Learning-rate schedules: the pure multipliers, the scheduler objects (against
torch.optim.lr_scheduler where it has the same schedule) and their checkpoints."""

import json
import math

import pytest

import minilm as ml
from minilm import nn, optim
from minilm.optim import lr_scheduler

from ..helpers import oracle


def make_optimizer(lrs=(0.1,)):
    groups = [{"params": [nn.Parameter(ml.zeros(2))], "lr": lr} for lr in lrs]
    return optim.SGD(groups, lr=lrs[0])


def run(scheduler, steps):
    lrs = [scheduler.get_last_lr()]
    for _ in range(steps):
        scheduler.optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr())
    return lrs


def test_warmup_cosine_shape():
    f = lambda s: lr_scheduler.warmup_cosine(s, warmup_steps=10, total_steps=110, min_ratio=0.1)  # noqa: E731
    assert f(0) == 0.1 and f(4) == 0.5 and f(9) == 1.0 and f(10) == 1.0  # the first step already learns
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(10, 200))


def test_warmup_linear_and_step_decay_and_constant():
    f = lambda s: lr_scheduler.warmup_linear(s, warmup_steps=4, total_steps=14)  # noqa: E731
    assert [f(s) for s in (0, 2, 4, 9, 14, 20)] == pytest.approx([0.25, 0.75, 1.0, 0.5, 0.0, 0.0])
    assert [lr_scheduler.step_decay(s, 3, 0.5) for s in range(7)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    assert lr_scheduler.constant(1000) == 1.0
    assert [lr_scheduler.warmup_constant(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_scheduler.warmup_constant(0, 0) == 1.0


def test_scheduler_objects_follow_their_functions_per_group():
    scheduler = lr_scheduler.WarmupCosineLR(make_optimizer((0.1, 0.01)), warmup_steps=3, total_steps=20, min_ratio=0.2)
    lrs = run(scheduler, 25)
    for step, (lr0, lr1) in enumerate(lrs):
        factor = lr_scheduler.warmup_cosine(step, 3, 20, 0.2)
        assert lr0 == pytest.approx(0.1 * factor) and lr1 == pytest.approx(0.01 * factor)
    assert scheduler.lr_at(1) == pytest.approx([0.1 * 2 / 3, 0.01 * 2 / 3])
    linear = lr_scheduler.WarmupLinearLR(make_optimizer(), warmup_steps=2, total_steps=6)
    assert [lr[0] for lr in run(linear, 7)] == pytest.approx([0.05, 0.1, 0.1, 0.075, 0.05, 0.025, 0.0, 0.0])


def test_step_and_lambda_schedulers_match_torch():
    torch = oracle("torch", reason="PyTorch is the oracle for scheduler parity")
    for make, make_torch in [
        (lambda o: lr_scheduler.StepLR(o, step_size=4, gamma=0.3),
         lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=4, gamma=0.3)),
        (lambda o: lr_scheduler.LambdaLR(o, lambda s: 1 / (1 + s)),
         lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1 / (1 + s))),
    ]:
        ours = make(make_optimizer((0.1, 0.5)))
        torch_opt = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr in (0.1, 0.5)])
        theirs = make_torch(torch_opt)
        for _ in range(20):
            assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-12)
            ours.optimizer.step()
            ours.step()
            torch_opt.step()
            theirs.step()


def test_scheduler_checkpoint_resumes_at_the_same_step():
    first = lr_scheduler.WarmupCosineLR(make_optimizer(), warmup_steps=5, total_steps=50)
    run(first, 17)
    saved = json.loads(json.dumps(first.state_dict()))
    expected = run(first, 10)
    optimizer = make_optimizer()
    second = lr_scheduler.WarmupCosineLR(optimizer, warmup_steps=5, total_steps=50)
    second.load_state_dict(saved)
    assert second.get_last_lr() == expected[0] and optimizer.param_groups[0]["lr"] == expected[0][0]
    assert run(second, 10) == expected


def test_lambda_lr_checks_the_number_of_functions():
    with pytest.raises(ValueError, match="2 lr_lambdas for 1 parameter groups"):
        lr_scheduler.LambdaLR(make_optimizer(), [math.sqrt, math.sqrt])
