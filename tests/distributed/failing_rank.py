"""Run with `mpiexec -n 2`: rank 1 fails in its third training step while rank 0 waits in the
allreduce. Every rank must end (no hang), with rank 1's message, and a non-zero exit status."""

import numpy as np

import minilm as ml
from minilm import distributed
from minilm.models import GPT, GPTConfig
from minilm.train import CausalLMTask, Trainer, TrainingConfig


class BreaksOnRankOne(CausalLMTask):
    calls = 0

    def loss(self, model, batch):
        BreaksOnRankOne.calls += 1
        if distributed.current().rank == 1 and BreaksOnRankOne.calls == 3:
            raise RuntimeError("rank one's data loader broke")
        return super().loss(model, batch)


ml.manual_seed(0)
tokens = np.random.default_rng(0).integers(0, 40, 2000)
task = BreaksOnRankOne(tokens[:1500], tokens[1500:], block_size=16, batch_size=4)
model = GPT(GPTConfig(vocab_size=40, n_layer=1, n_head=2, n_embd=16, block_size=16))
Trainer(model, task, TrainingConfig(max_steps=10, batch_size=4, eval_interval=100), quiet=True).fit()
print("finished without the failure")
