"""`hyperclone train --strategy fsdp` (FSDP2 on gloo, two CPU processes under torchrun): the same loss curve as one
process with the same global batch, half the bytes per process, DCP checkpoints that resume after a stop on the
same or a different number of processes, a plain exported model, and the dry run."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import make_corpus, make_model

from hyperclone.train.metrics import read_metrics

pytestmark = pytest.mark.slow  # multi-process FSDP2 and two-node runs under torchrun: minutes on 2 cores

REPO = Path(__file__).resolve().parents[1]
STEPS = 20
REL = 1e-4  # per-step train loss, fp32: the two-process run only reorders float sums


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    corpus = make_corpus(root / "corpus")
    model = make_model(root / "model", corpus)
    return root, corpus, model


def args(setup, out: Path, *extra: str) -> list[str]:
    root, corpus, model = setup
    return ["train", str(model), "--data", str(corpus), "--out", str(out), "--tokens", str(256 * STEPS),
            "--batch-tokens", "256", "--seq-len", "32", "--eval-every", "5", "--eval-tokens", "512",
            "--save-every", "10", "--log-every", "1", "--lr", "3e-3", "--warmup", "5", "--cache-dir",
            str(root / "cache"), "--no-progress", *extra]


def launch(setup, out: Path, procs: int, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    prefix = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs)]
              if procs > 1 else [sys.executable])
    done = subprocess.run([*prefix, "-m", "hyperclone.cli", *args(setup, out, *extra)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def losses(out: Path) -> dict[int, float]:
    return {m["step"]: m["train_loss"] for m in read_metrics(out) if m["train_loss"] is not None}


def close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rel: float) -> bool:
    return all(float((a[k] - b[k]).abs().max()) <= rel * float(a[k].abs().max()) + 1e-12 for k in a)


@pytest.fixture(scope="module")
def runs(setup, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    launch(setup, root / "single-ddp", 1)
    launch(setup, root / "fsdp2", 2, "--strategy", "fsdp")
    return root


def test_fsdp_matches_one_process_step_by_step(runs):
    one, two = losses(runs / "single-ddp"), losses(runs / "fsdp2")
    assert sorted(one) == sorted(two) == list(range(1, STEPS + 1))
    for step in one:
        assert abs(one[step] - two[step]) <= REL * one[step], (step, one[step], two[step])


def test_fsdp_holds_half_the_state_per_process(runs):
    ddp = json.loads((runs / "single-ddp" / "train_summary.json").read_text())["state_bytes_per_process"]
    fsdp = json.loads((runs / "fsdp2" / "train_summary.json").read_text())["state_bytes_per_process"]
    full = ddp[0]["param_bytes"] + ddp[0]["optimizer_bytes"]  # DDP keeps all of it on every process
    assert len(fsdp) == 2
    for rank in fsdp:
        assert rank["param_bytes"] + rank["optimizer_bytes"] <= 0.55 * full


def test_fsdp_checkpoint_is_sharded_and_final_is_plain(runs):
    ckpt = runs / "fsdp2" / "checkpoints" / "step-0000010"
    assert (ckpt / "dcp" / ".metadata").exists() and len(list((ckpt / "dcp").glob("*.distcp"))) == 2
    assert {p.name for p in ckpt.glob("rng-rank*.pt")} == {"rng-rank0.pt", "rng-rank1.pt"}
    torch.load(ckpt / "rng-rank1.pt", weights_only=True)  # no pickle code runs to read it
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(runs / "fsdp2" / "final")
    ref = load_file(runs / "single-ddp" / "final" / "model.safetensors")
    ours = {k: v for k, v in model.state_dict().items() if k in ref}
    assert close(ref, ours, 1e-3)  # 20 AdamW steps apart only by float summation order
    x = torch.arange(32).reshape(1, 32) % 300
    single = AutoModelForCausalLM.from_pretrained(runs / "single-ddp" / "final")
    with torch.no_grad():
        a, b = single(x).logits, model(x).logits
    assert float((a - b).abs().max()) <= 1e-3 * float(a.abs().max())


@pytest.mark.parametrize("first,then", [(2, 2), (2, 1), (1, 2)])
def test_fsdp_resumes_on_any_number_of_processes(setup, runs, tmp_path, first, then):
    """Stopped after 12 steps (last checkpoint at 10), resumed with `then` processes: ends where the
    uninterrupted two-process run ends. Same number of processes: bit-identical; another number: the same
    to float summation order (1e-5 relative)."""
    out = tmp_path / "run"
    launch(setup, out, first, "--strategy", "fsdp", "--stop-after", "12")
    assert not (out / "final").exists()
    done = launch(setup, out, then, "--strategy", "fsdp", "--resume")
    assert "resuming from" in done.stderr
    a = load_file(runs / "fsdp2" / "final" / "model.safetensors")
    b = load_file(out / "final" / "model.safetensors")
    if first == then == 2:
        assert all(torch.equal(a[k], b[k]) for k in a)
    else:
        assert close(a, b, 1e-5)
    steps = [m["step"] for m in read_metrics(out)]
    assert steps == sorted(set(steps))


def test_export_every_and_bf16(setup, tmp_path):
    out = tmp_path / "run"
    launch(setup, out, 2, "--strategy", "fsdp", "--save-hf-every", "10", "--save-dtype", "bf16")
    from transformers import AutoModelForCausalLM

    export = AutoModelForCausalLM.from_pretrained(out / "hf" / "step-0000010", dtype="auto")
    assert export.dtype == torch.bfloat16
    assert AutoModelForCausalLM.from_pretrained(out / "final", dtype="auto").dtype == torch.bfloat16


def test_strategy_mismatch_and_unsupported_options_are_one_line(setup, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "hyperclone.cli", *args(setup, out, "--stop-after", "11")],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0
    done = subprocess.run([sys.executable, "-m", "hyperclone.cli", *args(setup, out, "--strategy", "fsdp",
                                                                         "--resume")],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("hyperclone: error: cannot resume")
    done = subprocess.run([sys.executable, "-m", "hyperclone.cli", *args(setup, tmp_path / "x", "--cpu-offload")],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "--cpu-offload needs --strategy fsdp" in done.stderr


def test_dry_run_shows_bytes_per_process(setup, capsys):
    from hyperclone.cli import main

    _, _, model = setup
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(model), "--data", "x", "--out", "y", "--tokens", "1M", "--dry-run", "--processes", "8"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "parameters   41,120" in text  # the 2-layer test llama
    ddp = next(line for line in text.splitlines() if line.startswith("ddp"))
    fsdp = next(line for line in text.splitlines() if line.startswith("fsdp"))
    assert ddp.split()[-2] != fsdp.split()[-2]


def test_fsdp_with_compiled_blocks_and_activation_checkpointing(setup, runs, tmp_path):
    """--compile and --activation-checkpointing under FSDP2 on two processes: the loss curve of the plain
    FSDP run (fp32; same tolerance as one process against two)."""
    out = tmp_path / "fsdp-compiled"
    launch(setup, out, 2, "--strategy", "fsdp", "--compile", "--activation-checkpointing")
    plain, compiled = losses(runs / "fsdp2"), losses(out)
    assert sorted(plain) == sorted(compiled)
    for step in plain:
        assert abs(plain[step] - compiled[step]) <= REL * plain[step], (step, plain[step], compiled[step])


def test_fsdp_evaluates_windows_that_do_not_split_evenly(setup, tmp_path):
    """3 validation windows over 2 processes: under FSDP every forward is a collective, so the rank with fewer
    windows runs a forward that counts for nothing (before, the run hung in its first evaluation). The val
    losses equal one process's."""
    extra = ("--strategy", "fsdp", "--tokens", str(256 * 5), "--eval-tokens", "96")
    launch(setup, tmp_path / "one", 1, *extra)
    launch(setup, tmp_path / "two", 2, *extra)
    one, two = (evals(tmp_path / name) for name in ("one", "two"))
    assert sorted(one) == sorted(two) and len(one) >= 2
    for step in one:
        assert abs(one[step] - two[step]) <= REL * one[step], (step, one[step], two[step])


def evals(out: Path) -> dict[int, float]:
    return {m["step"]: m["val_loss"] for m in read_metrics(out) if m["val_loss"] is not None}


def test_distillation_under_fsdp_matches_one_process(setup, tmp_path):
    """--teacher under FSDP2 (the teacher replicated on each process) gives the one-process losses, and differs
    from the same run without the teacher."""
    _, _, model = setup  # the base model is its own teacher here: KL to its starting point
    kd = ("--teacher", str(model), "--kd-alpha", "0.5", "--kd-until", "0.5")
    launch(setup, tmp_path / "one", 1, *kd)
    launch(setup, tmp_path / "two", 2, "--strategy", "fsdp", *kd)
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert sorted(one) == sorted(two) == list(range(1, STEPS + 1))
    for step in one:
        assert abs(one[step] - two[step]) <= REL * one[step], (step, one[step], two[step])
    launch(setup, tmp_path / "plain", 1)
    assert losses(tmp_path / "plain") != one


def test_lr_scale_under_fsdp_matches_one_process(setup, tmp_path):
    """--lr-scale under FSDP2 (the groups built from the sharded model's names) gives the one-process losses, and
    differs from the same run at one learning rate."""
    scale = ("--lr-scale", "*proj.weight=0.25", "--lr-scale", "lm_head.weight=2")
    launch(setup, tmp_path / "one", 1, *scale)
    launch(setup, tmp_path / "two", 2, "--strategy", "fsdp", *scale)
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert sorted(one) == sorted(two) == list(range(1, STEPS + 1))
    for step in one:
        assert abs(one[step] - two[step]) <= REL * one[step], (step, one[step], two[step])
    launch(setup, tmp_path / "plain", 1)
    assert losses(tmp_path / "plain") != one


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """Every process below pid (read from /proc): torchrun starts each worker in a session of its own, so killing
    the agent's process group leaves its worker running."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_two_nodes_train_like_one_node_and_resume_on_one(setup, runs, tmp_path):
    """Two torchrun agents on this machine, each a 'node' of one process, meeting through c10d rendezvous on the
    loopback address (the flags a real two-node job uses, with the head node's address): FSDP gives the losses of
    one node with two processes; the job stopped after a checkpoint resumes on one node with two processes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    port = _free_port()
    out = tmp_path / "two-nodes"
    node = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "hc-test",
            "-m", "hyperclone.cli", *args(setup, out, "--strategy", "fsdp", "--stop-after", "12")]
    agents = [subprocess.Popen(node, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(2)]
    for agent in agents:
        _, err = agent.communicate(timeout=300)
        assert agent.returncode == 0, err[-3000:]
    launch(setup, out, 2, "--strategy", "fsdp", "--resume")  # the rest of the run on one node
    whole, split = losses(runs / "fsdp2"), losses(out)
    assert sorted(split) == sorted(whole)
    for step in whole:
        assert abs(whole[step] - split[step]) <= REL * whole[step], (step, whole[step], split[step])


def test_a_killed_node_then_a_restarted_job_resumes_from_the_last_checkpoint(setup, runs, tmp_path):
    """kill -9 of one node (its agent and its worker) once a checkpoint exists: the other node's job stops with an
    error; the job started again on both nodes resumes from the last complete checkpoint and ends with the
    losses of an uninterrupted run. The node killed is the one that does not host the c10d rendezvous store:
    the host is the rendezvous's single point of failure (torchrun's documentation; etcd is its highly available
    backend), and a node that loses it waits out the rendezvous timeouts instead of stopping at once."""
    import signal
    import socket
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = tmp_path / "killed"

    def start(*extra: str) -> list[subprocess.Popen]:
        """The host node's agent first (it binds the store's port), the other once the store listens."""
        port = _free_port()
        node = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "hc-kill",
                "-m", "hyperclone.cli", *args(setup, out, "--strategy", "fsdp", *extra)]

        def launch_node() -> subprocess.Popen:
            return subprocess.Popen(node, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                    start_new_session=True)

        host = launch_node()
        deadline = time.time() + 120
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.time() < deadline and host.poll() is None, "the host node's store never listened"
            time.sleep(0.05)
        return [host, launch_node()]

    host, other = start()
    deadline = time.time() + 240
    while not (out / "checkpoints" / "step-0000010" / "trainer_state.json").exists():
        assert time.time() < deadline and host.poll() is None and other.poll() is None, "no checkpoint before the kill"
        time.sleep(0.05)  # the run needs seconds from this checkpoint to its end; the kill comes well before
    for pid in [other.pid, *_descendants(other.pid)]:  # the agent and its worker (a session of its own)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    other.wait()
    host.communicate(timeout=300)
    assert host.returncode != 0  # the surviving node's job fails instead of hanging
    for agent in start("--resume"):
        _, err = agent.communicate(timeout=300)
        assert agent.returncode == 0, err[-3000:]
    whole, resumed = losses(runs / "fsdp2"), losses(out)
    assert sorted(resumed) == sorted(whole)
    for step in whole:
        assert abs(whole[step] - resumed[step]) <= REL * whole[step], (step, whole[step], resumed[step])


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_kill_during_a_save_resumes_from_the_last_complete_checkpoint(setup, runs, tmp_path, strategy):
    """kill -9 of a two-process job while rank 0 is inside the save of step 15 (every file of it written, the folder
    not yet marked complete: tests/pause_in_save.py holds it there): step 10 stays the last complete checkpoint,
    the half-written folder is not one, and --resume ends with the losses of an uninterrupted run."""
    import signal
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out, marker = tmp_path / "killed", tmp_path / "inside-the-save"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(REPO / "tests" / "pause_in_save.py"), str(marker), "step-0000015",
           *args(setup, out, "--strategy", strategy, "--save-every", "5", "--keep-checkpoints", "3")]
    job = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    deadline = time.time() + 240
    while not marker.exists():
        assert time.time() < deadline and job.poll() is None, "the job never reached the save"
        time.sleep(0.05)
    for pid in [job.pid, *_descendants(job.pid)]:  # torchrun and both workers (each in a session of its own)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    job.wait()
    checkpoints = out / "checkpoints"
    assert (checkpoints / "step-0000010" / "trainer_state.json").is_file()
    assert not (checkpoints / "step-0000015").exists()
    held = checkpoints / ".tmp-step-0000015"
    assert held.is_dir() and not (held / "trainer_state.json").exists()  # written, never marked complete
    done = launch(setup, out, 2, "--strategy", strategy, "--save-every", "5", "--keep-checkpoints", "3", "--resume")
    assert "resuming from" in done.stderr and "step-0000010" in done.stderr
    assert not held.exists() and (checkpoints / "step-0000015" / "trainer_state.json").is_file()  # saved again
    reference = losses(runs / ("fsdp2" if strategy == "fsdp" else "single-ddp"))
    resumed = losses(out)
    assert sorted(resumed) == sorted(reference)
    for step in reference:
        assert abs(reference[step] - resumed[step]) <= REL * reference[step], (step, reference[step], resumed[step])
