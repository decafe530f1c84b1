"""Learning-rate schedules.

Each schedule is a pure function of the step giving a multiplier of the base learning rate
(`warmup_cosine(step, ...)`, ...), plus a scheduler object in PyTorch's style that applies
it to an optimizer:

    scheduler = WarmupCosineLR(optimizer, warmup_steps=100, total_steps=10_000)
    for batch in data:
        loss.backward(); optimizer.step(); scheduler.step()

As in PyTorch, creating a scheduler sets the learning rates for step 0, and each `step()`
moves to the next step: group lr = base lr * factor(step). `state_dict()` holds only
numbers (the schedule's function itself is code, rebuilt by constructing the scheduler).

Warmups climb linearly and start above zero: step 0 (the first optimizer step) uses
1/warmup_steps of the base lr, step warmup_steps - 1 the full lr, so no step is wasted at
learning rate 0.
"""

from __future__ import annotations

import math


# ---------------------------------------------------------------------------------------
# Multipliers as pure functions of the step
# ---------------------------------------------------------------------------------------
def constant(step: int) -> float:
    return 1.0


def _warmup(step: int, warmup_steps: int) -> float:
    """The warmup ramp: (step + 1) / warmup_steps, reaching 1 at the last warmup step."""
    return (step + 1) / warmup_steps


def warmup_constant(step: int, warmup_steps: int) -> float:
    """Linear warmup over `warmup_steps`, then the base learning rate."""
    return _warmup(step, warmup_steps) if step < warmup_steps else 1.0


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """Linear warmup over `warmup_steps`, then a half cosine down to `min_ratio` at
    `total_steps` (and `min_ratio` after): Hugging Face's cosine schedule with a floor, except
    that the warmup starts at 1/warmup_steps, not 0."""
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_linear(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """Linear warmup over `warmup_steps`, then linear decay to `min_ratio` at `total_steps`."""
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * (1.0 - progress)


def step_decay(step: int, step_size: int, gamma: float = 0.1) -> float:
    """gamma ** (step // step_size): multiply the learning rate by gamma every step_size steps."""
    return gamma ** (step // step_size)


# ---------------------------------------------------------------------------------------
# Scheduler objects
# ---------------------------------------------------------------------------------------
class LRScheduler:
    """Sets every parameter group's lr to base_lr * factor(step). Subclasses define `factor`."""

    def __init__(self, optimizer, last_epoch: int = -1):
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def factor(self, step: int, group_index: int) -> float:
        raise NotImplementedError(f"{type(self).__name__} must implement factor")  # abstract

    def lr_at(self, step: int) -> list[float]:
        """The learning rate of each parameter group at `step` (changes nothing)."""
        return [base * self.factor(step, i) for i, base in enumerate(self.base_lrs)]

    def step(self) -> None:
        self.last_epoch += 1
        self._last_lr = self.lr_at(self.last_epoch)
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr

    def get_last_lr(self) -> list[float]:
        return list(self._last_lr)

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state_dict: dict) -> None:
        """Continue from a saved step: restores the step count and sets that step's lrs."""
        self.base_lrs = list(state_dict["base_lrs"])
        self.last_epoch = state_dict["last_epoch"] - 1
        self.step()


class LambdaLR(LRScheduler):
    """lr = base_lr * lr_lambda(step); one function, or one per parameter group."""

    def __init__(self, optimizer, lr_lambda, last_epoch: int = -1):
        count = len(optimizer.param_groups)
        lambdas = list(lr_lambda) if isinstance(lr_lambda, (list, tuple)) else [lr_lambda] * count
        if len(lambdas) != count:
            raise ValueError(f"LambdaLR: got {len(lambdas)} lr_lambdas for {count} parameter groups")
        self.lr_lambdas = lambdas
        super().__init__(optimizer, last_epoch)

    def factor(self, step, group_index):
        return self.lr_lambdas[group_index](step)


class StepLR(LRScheduler):
    """Multiply the learning rate by gamma every step_size steps."""

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        if step_size < 1:
            raise ValueError(f"StepLR: step_size must be at least 1, got {step_size}")
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def factor(self, step, group_index):
        return step_decay(step, self.step_size, self.gamma)


class WarmupCosineLR(LRScheduler):
    """Linear warmup over warmup_steps, then cosine decay to min_ratio * base lr at total_steps."""

    def __init__(self, optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.0, last_epoch: int = -1):
        self.warmup_steps, self.total_steps, self.min_ratio = warmup_steps, total_steps, min_ratio
        super().__init__(optimizer, last_epoch)

    def factor(self, step, group_index):
        return warmup_cosine(step, self.warmup_steps, self.total_steps, self.min_ratio)


class WarmupLinearLR(LRScheduler):
    """Linear warmup over warmup_steps, then linear decay to min_ratio * base lr at total_steps."""

    def __init__(self, optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.0, last_epoch: int = -1):
        self.warmup_steps, self.total_steps, self.min_ratio = warmup_steps, total_steps, min_ratio
        super().__init__(optimizer, last_epoch)

    def factor(self, step, group_index):
        return warmup_linear(step, self.warmup_steps, self.total_steps, self.min_ratio)
