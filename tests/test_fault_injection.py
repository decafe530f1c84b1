"""Faults injected into training runs: kills at every stage of a checkpoint write (a forked
child that dies with os._exit, as from SIGKILL: no cleanup code runs), a full disk (a mocked
writer raising ENOSPC, and a real file-size limit in a subprocess), a read-only folder, a torn
metrics log. After every fault the run resumes with bit-identical losses (or the command says in
one line why not), and no earlier checkpoint is ever lost."""

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minilm as ml
from minilm.cli import main
from minilm.models import GPT, GPTConfig
from minilm.train import CausalLMTask, Trainer, TrainingConfig
from minilm.train import checkpoint as ckpt

FIRST, LAST = 3, 6  # the run checkpoints at step 3, and at 6 (its end)


def _setup(out_dir, max_steps=LAST):
    ml.manual_seed(0)
    tokens = np.random.default_rng(0).integers(0, 40, 2000)
    model = GPT(GPTConfig(vocab_size=40, n_layer=1, n_head=2, n_embd=16, block_size=8, dropout=0.1))
    task = CausalLMTask(tokens[:1600], tokens[1600:], block_size=8, batch_size=2, seed=0)
    config = TrainingConfig(max_steps=max_steps, batch_size=2, lr=1e-2, warmup_steps=2, log_interval=1,
                            eval_interval=3, checkpoint_interval=FIRST, eval_batches=1)
    return Trainer(model, task, config, out_dir=out_dir, quiet=True)


def _losses(history):
    return [(r["step"], r["loss"]) for r in history if "loss" in r]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The losses of the uninterrupted run."""
    return _losses(_setup(tmp_path_factory.mktemp("reference")).fit())


def _logged_steps(out_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out_dir / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


def _resume_and_check(out_dir: Path, reference, at_least: int) -> None:
    """The run in out_dir finds a complete checkpoint of step >= at_least (none lost), resumes,
    and ends with the uninterrupted run's losses, each step logged once."""
    found = ckpt.latest_checkpoint(out_dir)
    assert found is not None and ckpt.complete_step(found) >= at_least
    trainer = _setup(out_dir)
    trainer.resume()
    history = trainer.fit()
    assert _losses(history) == reference  # bit-identical: exact float equality
    assert _logged_steps(out_dir) == list(range(1, LAST + 1))
    leftovers = [p.name for p in out_dir.iterdir() if p.name.startswith(".checkpoint")]
    assert leftovers == [] and ckpt.complete_step(out_dir / "checkpoint") == LAST


def _die_at(target: str, n: int):
    """Patch `target` ("os.replace", ...) so that its n-th call ends the process at once."""
    module_name, name = target.rsplit(".", 1)
    module = {"os": os, "shutil": shutil}[module_name]
    original = getattr(module, name)
    calls = [0]

    def dying(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            os._exit(137)
        return original(*args, **kwargs)

    setattr(module, name, dying)


def _run_child(fn) -> int:
    """Run fn in a forked child that leaves by os._exit only; the child's exit status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            fn()
        except BaseException:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


# Every file-system call a checkpoint write makes, in order: the staging folder, two safetensors
# files and two JSON files (each a temporary file, fsync, rename), the directory syncs, the two
# renames of the swap and the removal of the old folder. Killing at the n-th call of each kind
# covers every stage, including between the two renames (the 5th and 6th os.replace).
STAGES = ([("os.replace", n) for n in range(1, 7)] + [("os.fsync", n) for n in range(1, 9)]
          + [("os.mkdir", 1), ("shutil.rmtree", 1)])


# The kills happen in a forked child, which trains on the default device. CUDA cannot be used in
# a child forked from a process that has used it, so under MINILM_BACKEND=cupy these skip.
forks = pytest.mark.skipif(not hasattr(os, "fork") or ml.default_device().name == "cuda",
                           reason="needs fork, and a forked child cannot use the parent's CUDA context")


@forks
@pytest.mark.parametrize("target,n", STAGES, ids=[f"{t}-{n}" for t, n in STAGES])
def test_a_kill_at_any_stage_of_a_checkpoint_write_loses_nothing(tmp_path, reference, target, n):
    run = tmp_path / "run"
    _setup(run).fit(stop_at_step=FIRST)  # the earlier checkpoint, at step 3

    def child():
        trainer = _setup(run)
        trainer.resume()
        _die_at(target, n)  # from here: the steps 4..6, then the checkpoint of step 6
        trainer.fit()

    status = _run_child(child)
    assert status in (0, 137)
    _resume_and_check(run, reference, at_least=FIRST)


@forks
def test_a_kill_between_the_two_renames_leaves_the_new_checkpoint_findable(tmp_path, reference):
    run = tmp_path / "run"
    _setup(run).fit(stop_at_step=FIRST)

    def child():
        trainer = _setup(run)
        trainer.resume()
        _die_at("os.replace", 6)  # the 5th moved checkpoint/ away; the 6th would move the new one in
        trainer.fit()

    assert _run_child(child) == 137
    assert not (run / "checkpoint").exists()
    names = sorted(p.name for p in run.iterdir() if p.name.startswith(".checkpoint"))
    assert names == [".checkpoint.old-3", f".checkpoint.tmp-{_child_pid(run)}"]
    assert ckpt.complete_step(ckpt.latest_checkpoint(run)) == LAST
    # Trainer.load_checkpoint(out_dir/"checkpoint"), as older code calls it, finds it as well.
    trainer = _setup(run)
    trainer.load_checkpoint(run / "checkpoint")
    assert trainer.step == LAST


def _child_pid(run: Path) -> str:
    return next(p.name.rsplit("-", 1)[1] for p in run.iterdir() if p.name.startswith(".checkpoint.tmp-"))


def test_staging_folders_of_killed_runs_are_cleaned_up(tmp_path, reference):
    run = tmp_path / "run"
    _setup(run).fit(stop_at_step=FIRST)
    # A run killed while writing its staging folder (no marker yet), and one of an older minilm.
    (run / ".checkpoint.tmp-99999").mkdir()
    (run / ".checkpoint.tmp-99999" / "model.safetensors").write_bytes(b"partial")
    (run / ".checkpoint-12345").mkdir()
    _resume_and_check(run, reference, at_least=FIRST)


def test_a_full_disk_during_a_checkpoint_keeps_the_earlier_one(tmp_path, reference, monkeypatch):
    run = tmp_path / "run"
    _setup(run).fit(stop_at_step=FIRST)
    before = (run / "checkpoint" / "model.safetensors").read_bytes()
    trainer = _setup(run)
    trainer.resume()
    real_fsync = os.fsync

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        trainer.fit()
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert (run / "checkpoint" / "model.safetensors").read_bytes() == before
    assert ckpt.complete_step(run / "checkpoint") == FIRST
    _resume_and_check(run, reference, at_least=FIRST)


def test_a_read_only_folder_stops_the_run_and_keeps_the_checkpoint(tmp_path, reference, monkeypatch):
    run = tmp_path / "run"
    _setup(run).fit(stop_at_step=FIRST)
    trainer = _setup(run)
    trainer.resume()
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(OSError, match="Read-only"):
        trainer.fit()
    monkeypatch.setattr(Path, "mkdir", real_mkdir)
    _resume_and_check(run, reference, at_least=FIRST)


def test_a_torn_metrics_line_is_dropped_with_a_note_and_no_step_is_logged_twice(tmp_path, reference, capsys):
    run = tmp_path / "run"
    _setup(run).fit(stop_at_step=FIRST)
    # The run went on past its checkpoint of step 3, logged steps 4 and 5, and a kill (or a full
    # disk) tore the record of step 6.
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "loss": 1.0}\n{"step": 5, "loss": 1.0}\n{"step": 6, "loss": 3.1')
    _resume_and_check(run, reference, at_least=FIRST)
    assert re.search(r"metrics.jsonl, line 7: dropped a torn last record", capsys.readouterr().err)  # 3 + val + 4, 5


def test_a_bad_line_inside_the_metrics_log_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo\n{"step": 3, "loss": 1.0}\n')
    with pytest.raises(ml.data.DataError, match=r"metrics.jsonl, line 2"):
        ckpt.read_metrics_log(path)


# -- the command line ---------------------------------------------------------------------------
TEXT = "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. " * 30
SMALL = ["--vocab-size", "270", "--layers", "1", "--width", "16", "--heads", "2", "--block-size", "16",
         "--batch-size", "2", "--eval-interval", "2", "--checkpoint-interval", "2", "--samples", "0", "--quiet"]


def _train(tmp_path, *extra):
    data = tmp_path / "data.txt"
    data.write_text(TEXT)
    return main(["train", "--data", str(data), "--out-dir", str(tmp_path), *SMALL, *extra])


def _one_line_error(capsys, *fragments):
    err = capsys.readouterr().err
    assert err.startswith("minilm: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err


def test_cli_disk_full_is_one_line_and_the_run_resumes(tmp_path, capsys):
    """A real file-size limit (RLIMIT_FSIZE) in a subprocess: the optimizer file of the first
    checkpoint does not fit. One error line, exit 2; then the run resumes (from step 0: it
    stopped before its first checkpoint) and finishes."""
    resource = pytest.importorskip("resource")
    data = tmp_path / "data.txt"
    data.write_text(TEXT)
    args = ["train", "--data", str(data), "--out-dir", str(tmp_path), "--name", "r", "--steps", "2", *SMALL]
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (40000, 40000))\n"
        "from minilm.cli import main\n"
        f"sys.exit(main({args!r}))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minilm: error: ") and "File too large" in lines[0]
    assert ".safetensors" in lines[0]  # the file that did not fit is named
    assert resource.RLIMIT_FSIZE  # the limit existed on this platform
    assert main(["train", "--resume", str(tmp_path / "r"), "--quiet", "--samples", "0"]) == 0
    assert "no complete checkpoint" not in capsys.readouterr().err  # --quiet: no notes
    state = json.loads((tmp_path / "r" / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 2
    assert _logged_steps(tmp_path / "r") == [2]  # the CLI logs every 10th step and the last


def test_cli_read_only_output_folder_is_one_line(tmp_path, capsys, monkeypatch):
    def read_only(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    assert _train(tmp_path, "--name", "ro", "--steps", "2") == 2
    _one_line_error(capsys, "Permission denied", "ro")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_cli_read_only_folder_by_permissions(tmp_path, capsys):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert _train(folder, "--name", "x", "--steps", "2") == 2
        _one_line_error(capsys, "Permission denied")
    finally:
        folder.chmod(0o755)


def test_cli_checkpoint_of_another_model_type_is_one_line(tmp_path, capsys):
    assert _train(tmp_path, "--name", "g", "--steps", "2") == 0
    assert _train(tmp_path, "--name", "l", "--steps", "2", "--model", "lstm") == 0
    capsys.readouterr()
    shutil.rmtree(tmp_path / "g" / "checkpoint")
    shutil.copytree(tmp_path / "l" / "checkpoint", tmp_path / "g" / "checkpoint")
    assert main(["train", "--resume", str(tmp_path / "g"), "--steps", "4", "--quiet"]) == 2
    _one_line_error(capsys, "LSTMLanguageModel", "not of a GPT")


def test_cli_run_killed_before_its_first_checkpoint_can_be_resumed_or_restarted(tmp_path, capsys):
    assert _train(tmp_path, "--name", "k", "--steps", "2") == 0
    run = tmp_path / "k"
    shutil.rmtree(run / "checkpoint")
    (run / "model.safetensors").unlink()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 5.0}\n{"step": 2, "lo')
    # resumed: from step 0, the stale log emptied first
    assert main(["train", "--resume", str(run), "--samples", "0"]) == 0
    assert "no complete checkpoint" in capsys.readouterr().err
    assert _logged_steps(run) == [2]
    # restarted under its name
    shutil.rmtree(run / "checkpoint")
    (run / "model.safetensors").unlink()
    assert _train(tmp_path, "--name", "k", "--steps", "2") == 0
    assert _logged_steps(run) == [2]
    # a run with a checkpoint is not overwritten
    assert _train(tmp_path, "--name", "k", "--steps", "2") == 2
    _one_line_error(capsys, "already holds a run")
