"""Optimizers and learning-rate schedules with PyTorch's names and semantics.

    from minilm import optim
    opt = optim.AdamW(optim.param_groups_no_decay(model, 0.1), lr=3e-4)
    sched = optim.lr_scheduler.WarmupCosineLR(opt, warmup_steps=100, total_steps=5000)
"""

from . import lr_scheduler
from .adam import Adam, AdamW
from .optimizer import Optimizer, param_groups_no_decay
from .sgd import SGD

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "lr_scheduler", "param_groups_no_decay"]
