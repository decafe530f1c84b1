"""Run with `mpiexec -n 2 python tests/distributed/check_data_parallel.py`; prints OK on success.

Checks, in float64: the gradients averaged over the two ranks equal one process's
full-batch gradients; a Trainer keeps the parameters identical on both ranks for 20 steps
(with dropout, so the ranks draw different masks); a batch that does not split over the
ranks is a clear error on every rank.
"""

import numpy as np

import minilm as ml
from minilm import distributed
from minilm.models import GPT, GPTConfig
from minilm.train import CausalLMTask, Trainer, TrainingConfig

VOCAB, BLOCK = 40, 16


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def relative_error(a, b) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def make_model(seed: int, dropout: float = 0.0) -> GPT:
    ml.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=VOCAB, n_layer=2, n_head=2, n_embd=16, block_size=BLOCK, dropout=dropout))


def averaged_gradients_equal_full_batch_gradients(comm) -> None:
    model = make_model(seed=comm.rank)  # different weights on each rank until the broadcast
    comm.broadcast_parameters(model)
    windows = np.random.default_rng(0).integers(0, VOCAB, (8, BLOCK + 1))  # the same global batch everywhere
    batch = {"ids": windows[:, :-1], "targets": windows[:, 1:]}

    full_loss = model(batch["ids"], targets=batch["targets"]).loss  # what one process computes
    full_loss.backward()
    expected = {name: p.grad.numpy().copy() for name, p in model.named_parameters()}
    model.zero_grad()

    shard = comm.shard(batch)
    check(len(shard["ids"]) == 4, f"rank {comm.rank} got {len(shard['ids'])} rows of 8")
    loss = model(shard["ids"], targets=shard["targets"]).loss
    loss.backward()
    mean_loss = distributed.GradientAllreduce(model.parameters(), comm)(float(loss.item()))

    check(relative_error(np.array(mean_loss), np.array(full_loss.item())) <= 1e-12, "the averaged loss differs")
    worst = max((relative_error(p.grad.numpy(), expected[name]), name) for name, p in model.named_parameters())
    check(worst[0] <= 1e-12, f"averaged gradient of {worst[1]} differs from the full batch's by {worst[0]:.2e}")


def parameters_stay_identical_for_20_steps(comm) -> None:
    model = make_model(seed=10 + comm.rank, dropout=0.1)
    tokens = np.random.default_rng(1).integers(0, VOCAB, 3000)
    task = CausalLMTask(tokens[:2500], tokens[2500:], block_size=BLOCK, batch_size=4, seed=comm.rank)
    config = TrainingConfig(max_steps=20, batch_size=4, grad_accum=2, lr=1e-2, warmup_steps=2, log_interval=1,
                            eval_interval=10, eval_batches=2, checkpoint_interval=100)
    history = Trainer(model, task, config, quiet=True).fit()
    mine = np.concatenate([p.numpy().ravel() for p in model.parameters()])
    ranks = comm.mpi.allgather(mine)
    check(all(np.array_equal(ranks[0], other) for other in ranks[1:]), "parameters differ between ranks after 20 steps")
    losses = comm.mpi.allgather([(r["step"], r.get("loss"), r.get("val_loss")) for r in history])
    check(losses[0] == losses[1], "the ranks logged different losses")
    check(len([r for r in history if "loss" in r]) == 20, "not 20 logged steps")


def indivisible_batch_is_a_clear_error(comm) -> None:
    tokens = np.arange(500) % VOCAB
    task = CausalLMTask(tokens[:400], tokens[400:], block_size=BLOCK, batch_size=3)
    try:
        Trainer(make_model(0), task, TrainingConfig(max_steps=1, batch_size=3), quiet=True)
    except ValueError as error:
        check("not divisible by the 2 ranks" in str(error), f"unclear message: {error}")
        check(getattr(error, "raised_on_every_rank", False), "the error is not marked as raised on every rank")
    else:
        raise AssertionError("a batch of 3 over 2 ranks was accepted")


def main() -> None:
    comm = distributed.init()
    check(comm.size == 2, f"run this with mpiexec -n 2 (world size is {comm.size})")
    ml.set_default_dtype(ml.float64)
    with comm.abort_on_error():  # a failed check on one rank must not leave the other waiting
        averaged_gradients_equal_full_batch_gradients(comm)
        parameters_stay_identical_for_20_steps(comm)
        indivisible_batch_is_a_clear_error(comm)
    comm.barrier()
    if comm.is_main:
        print("OK")


if __name__ == "__main__":
    main()
