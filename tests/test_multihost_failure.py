"""A two-process orca-train whose peer is SIGKILLed: the survivor ends within the heartbeat timeout
with one line naming the lost process, the step and the checkpoint to resume from; status
PEER_LOST, no traceback, no abort, no core file.

Killing process 1 exercises the loop's `exit_if_peer_lost` and the key-value watchdog; killing
process 0 (the coordination service's host) exercises the SIGABRT handler, since the survivor's JAX
client LOG(FATAL)s the moment the service's socket closes."""

import glob
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time

import pytest

from orca_jax.datagen.mini_orca import write_mini_orca
from orca_jax.parallel.distributed import PEER_LOST

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEARTBEAT_TIMEOUT = 20  # seconds; the survivor must end well within it (our evidence wait is 5 s)
TINY = [
    "--gin.ModelConfig.d_model=32", "--gin.ModelConfig.num_layers=1", "--gin.ModelConfig.num_heads=2",
    "--gin.ModelConfig.num_kv_heads=2", "--gin.ModelConfig.mlp_dim=64", "--gin.DataConfig.sequence_length=256",
    "--gin.TrainConfig.batch_size=8", "--gin.TrainConfig.log_every=1", "--gin.OptimizerConfig.warmup_steps=2",
    "--gin.MeshConfig.data=2", "--gin.MeshConfig.fsdp=-1", "--gin.TrainConfig.data_shards=2",
]  # fmt: skip


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def allow_core_files():
    """In the child: lift the core-size limit (0 on many machines) so an abort would leave a core file."""
    resource.setrlimit(resource.RLIMIT_CORE, (resource.getrlimit(resource.RLIMIT_CORE)[1],) * 2)


def start_pair(tmp_path, model_dir, data_dir):
    gin = [f"--gin_file={REPO}/configs/runs/mini_orca.gin", f"--gin.MODEL_DIR={model_dir}",
           f"--gin.DATA_DIR={data_dir}"]  # fmt: skip
    args = [sys.executable, "-m", "orca_jax.cli.train", *gin, "--gin.NUM_STEPS=500",
            "--gin.TrainConfig.checkpoint_every=2", *TINY, f"--coordinator_address=localhost:{free_port()}",
            "--num_processes=2", f"--heartbeat_timeout={HEARTBEAT_TIMEOUT}"]  # fmt: skip
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO,
               XLA_FLAGS="--xla_force_host_platform_device_count=4")  # fmt: skip
    processes = []
    for i in range(2):
        out, err = open(tmp_path / f"out{i}.txt", "w"), open(tmp_path / f"err{i}.txt", "w")
        processes.append(subprocess.Popen([*args, f"--process_id={i}"], cwd=tmp_path, env=env, stdout=out, stderr=err,
                                          preexec_fn=allow_core_files))  # fmt: skip
    return processes


def wait_for_steps(processes, model_dir, n):
    path = os.path.join(model_dir, "metrics.jsonl")
    deadline = time.time() + 400
    while time.time() < deadline and all(p.poll() is None for p in processes):
        if os.path.exists(path) and sum(1 for _ in open(path)) >= n:
            return
        time.sleep(0.2)
    for p in processes:
        p.kill()
    pytest.fail(f"the two processes did not reach step {n} (exit codes {[p.poll() for p in processes]})")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("data") / "mini")
    write_mini_orca(out, num_train=400, num_heldout=16, families=["addition"], seed=0)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("victim", [1, 0])
def test_a_killed_peer_ends_the_other_process_with_one_line(victim, data_dir, tmp_path):
    model_dir = str(tmp_path / "run")
    processes = start_pair(tmp_path, model_dir, data_dir)
    wait_for_steps(processes, model_dir, 5)  # checkpoint_every=2: step 2 is saved, 4 is on its way
    processes[victim].send_signal(signal.SIGKILL)
    killed = time.time()
    survivor = processes[1 - victim]
    try:
        code = survivor.wait(timeout=HEARTBEAT_TIMEOUT + 20)
    except subprocess.TimeoutExpired:
        survivor.kill()
        pytest.fail("the survivor did not exit")
    elapsed = time.time() - killed
    print(f"process {1 - victim} exited {elapsed:.2f}s after process {victim} was killed")
    processes[victim].wait()
    out, err = (open(tmp_path / f"{name}{1 - victim}.txt").read() for name in ("out", "err"))

    assert code == PEER_LOST, err[-3000:]  # > 0: an exit status, not a signal (an abort reads -6)
    assert elapsed < HEARTBEAT_TIMEOUT, f"{elapsed:.1f}s from the kill to the exit"
    last = [line for line in err.splitlines() if line.strip()][-1]
    found = re.fullmatch(rf"orca-train: process {victim} of 2 stopped \(lost at step (\d+)\); "
                         r"restart every process to resume from (\S+)", last)  # fmt: skip
    assert found, last
    step, resume_from = int(found[1]), found[2]
    assert os.path.dirname(resume_from) == os.path.join(model_dir, "checkpoints") and os.path.isdir(resume_from)
    assert 2 <= int(os.path.basename(resume_from)) <= step  # step 4 may still be being written
    assert "Traceback" not in out + err
    # A core file would land in the working directory (tmp_path) where core_pattern is a plain name;
    # where it pipes cores elsewhere (systemd-coredump, apport), the exit status above is the check.
    assert not glob.glob(str(tmp_path / "core*"))
