"""Data-parallel training (minilm.distributed): in this process as a world of one, and as
real two-rank MPI runs launched with `mpiexec -n 2` (skipped when mpi4py or mpiexec is missing).

Tolerances: the two-rank gradient check runs in float64 and asks for 1e-12 relative error
(see tests/distributed/check_data_parallel.py). `minilm train` runs in float32, where the
two ranks sum the loss and gradients in a different order than one process does, so the
losses of a 2-rank and a 1-rank run agree to rtol 1e-5, not bit for bit.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minilm as ml
from minilm import distributed
from minilm.cli import main

HERE = Path(__file__).parent
TIMEOUT = 60  # seconds for one mpiexec run; a hang fails the test instead of stalling CI
TEXT = ("The quick brown fox jumps over the lazy dog. " * 40 + "Pack my box with five dozen liquor jugs. " * 40) * 3
LOSS_RTOL = 1e-5


def find_mpiexec() -> str | None:
    """The mpiexec of this Python's environment (the mpich wheel puts it there), else PATH's."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


MPIEXEC = find_mpiexec()
needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or MPIEXEC is None,
    reason="needs mpi4py and an mpiexec (pip install mpi4py mpich)",
)


def _gpus() -> int:
    import cupy

    return cupy.cuda.runtime.getDeviceCount()


if ml.default_device().name == "cuda" and _gpus() < 2:  # under MINILM_BACKEND=cupy each rank takes a GPU
    needs_mpi = pytest.mark.skip(reason="two ranks on the cupy backend need two GPUs")

# Open MPI's mpiexec refuses to run as root (containers) unless told twice; MPICH ignores these.
_MPI_ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def mpiexec(ranks: int, *command, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([MPIEXEC, "-n", str(ranks), sys.executable, *command], capture_output=True, text=True,
                          timeout=TIMEOUT, cwd=cwd, env=_MPI_ENV)


# ---------------------------------------------------------------------------------------
# A world of one, in this process
# ---------------------------------------------------------------------------------------
def test_a_single_process_runs_without_mpi4py():
    # A clean interpreter with mpi4py made unimportable and no launcher variables.
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "from minilm import distributed\n"
            "comm = distributed.init()\n"
            "print(comm.rank, comm.size, comm.is_main, 'mpi4py' in sys.modules and sys.modules['mpi4py'] is not None)")
    env = {k: v for k, v in os.environ.items() if k not in distributed.LAUNCHER_VARIABLES + ("MINILM_DISTRIBUTED",)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "1", "True", "False"]


def test_a_launcher_without_mpi4py_is_a_clear_error():
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "from minilm.cli import main\n"
            "sys.exit(main(['train', '--steps', '1']))")
    env = dict(os.environ, PMI_SIZE="2", PMI_RANK="0")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=TIMEOUT)
    assert result.returncode == 2
    assert "mpi4py is not installed: pip install mpi4py mpich" in result.stderr


def test_world_of_one_operations_are_the_identity():
    comm = distributed.Communicator()
    batch = {"ids": np.arange(12).reshape(4, 3)}
    assert comm.shard(batch) is batch
    assert comm.broadcast_object({"a": 1}) == {"a": 1}
    assert comm.run_on_main(lambda: 42) == 42
    comm.check_batch_size(5)


def test_shard_rows_gives_each_rank_its_contiguous_slice():
    batch = {"ids": np.arange(16).reshape(8, 2), "labels": np.arange(8)}
    shards = [distributed.shard_rows(batch, rank, 4) for rank in range(4)]
    assert np.array_equal(np.concatenate([s["ids"] for s in shards]), batch["ids"])
    assert [s["labels"].tolist() for s in shards] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    with pytest.raises(ValueError, match="a batch of 8 rows cannot be split evenly over 3 ranks"):
        distributed.shard_rows(batch, 0, 3)


# ---------------------------------------------------------------------------------------
# Two ranks under mpiexec
# ---------------------------------------------------------------------------------------
@needs_mpi
def test_two_ranks_average_gradients_exactly_and_stay_identical():
    result = mpiexec(2, str(HERE / "distributed" / "check_data_parallel.py"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "OK"


@needs_mpi
def test_a_failing_rank_ends_every_rank_with_its_message():
    result = mpiexec(2, str(HERE / "distributed" / "failing_rank.py"))  # a hang would time out
    assert result.returncode != 0
    assert "rank 1 of 2 failed: RuntimeError: rank one's data loader broke" in result.stderr
    assert "finished without the failure" not in result.stdout


def _train_args(root: Path, name: str, steps: int) -> list[str]:
    return ["train", "--data", str(root / "data.txt"), "--steps", str(steps), "--eval-interval", "1",
            "--checkpoint-interval", "2", "--vocab-size", "300", "--layers", "1", "--width", "16", "--heads", "2",
            "--block-size", "16", "--batch-size", "4", "--samples", "1", "--sample-tokens", "5",
            "--out-dir", str(root), "--name", name, "--quiet"]


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _losses(run: Path) -> dict:
    """(step, key) -> value of every training and validation loss in the run's metrics."""
    return {(r["step"], key): r[key] for r in _records(run) for key in ("loss", "val_loss") if key in r}


def _assert_close(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == pytest.approx(expected[key], rel=LOSS_RTOL), key


@needs_mpi
def test_minilm_train_on_two_ranks_matches_one_rank_and_resumes_with_either(tmp_path):
    (tmp_path / "data.txt").write_text(TEXT, encoding="utf-8")
    # One rank, 4 steps (a validation loss after every step), then resumed to 6 on one rank.
    assert main(_train_args(tmp_path, "one", 4)) == 0
    shutil.copytree(tmp_path / "one", tmp_path / "one-then-two")

    # The same run on two ranks: every rank's half of each global batch of 4.
    two = mpiexec(2, "-m", "minilm", *_train_args(tmp_path, "two", 4))
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("run folder:") == 1  # only rank 0 reports
    records = _records(tmp_path / "two")
    assert len(records) == len({(r["step"], tuple(sorted(r))) for r in records})  # no line written twice
    _assert_close(_losses(tmp_path / "two"), _losses(tmp_path / "one"))

    # Resume: 1 -> 1 rank (the reference), 2 -> 1 ranks, 1 -> 2 ranks; all must agree.
    assert main(["train", "--resume", str(tmp_path / "one"), "--steps", "6", "--quiet"]) == 0
    assert main(["train", "--resume", str(tmp_path / "two"), "--steps", "6", "--quiet"]) == 0
    more = mpiexec(2, "-m", "minilm", "train", "--resume", str(tmp_path / "one-then-two"), "--steps", "6", "--quiet")
    assert more.returncode == 0, more.stderr
    reference = _losses(tmp_path / "one")
    assert max(step for step, _ in reference) == 6
    for run in ("two", "one-then-two"):
        _assert_close(_losses(tmp_path / run), reference)
        state = json.loads((tmp_path / run / "checkpoint" / "trainer_state.json").read_text())
        assert state["step"] == 6


@needs_mpi
def test_a_batch_that_does_not_split_over_the_ranks_is_one_clear_error(tmp_path):
    (tmp_path / "data.txt").write_text(TEXT, encoding="utf-8")
    args = _train_args(tmp_path, "odd", 2)
    args[args.index("--batch-size") + 1] = "3"
    result = mpiexec(2, "-m", "minilm", *args)
    assert result.returncode == 2
    assert result.stderr.count("the global batch size 3 is not divisible by the 2 ranks") == 1
    assert not (tmp_path / "odd").exists()
