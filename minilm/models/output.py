"""The one result type every model's forward returns.

A forward pass hands back a `ModelOutput` whatever flags it was given, so callers read
results by name (`out.logits`, `out.loss`) instead of counting tuple items. For the familiar
unpacking, iterating yields the fields that are set, in declaration order (as Hugging Face's
outputs do): `logits, loss = model(ids, targets=targets)`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..autograd import Tensor


@dataclass
class ModelOutput:
    logits: Tensor  # [B, T, V] for language models, [B, num_labels] for classifiers
    loss: Tensor | None = None  # scalar, when targets/labels were given
    attentions: list | None = None  # one [B, H, T, S] weight tensor per layer, when asked for
    state: object = None  # recurrent models: the (h, c) state to continue from

    def __iter__(self):
        return iter([getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None])
