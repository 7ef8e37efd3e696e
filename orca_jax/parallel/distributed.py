"""Multi-host start-up (`jax.distributed.initialize`) and a clean end when a peer process dies.

On a Cloud TPU pod slice (or a SLURM GPU job) every host runs the same command and JAX finds its
peers from the environment; elsewhere (several processes on one machine, a cluster of your own)
pass the coordinator explicitly:

    orca-train ... --coordinator_address=host0:8476 --num_processes=2 --process_id=0

When one process dies (preempted, OOM-killed, SIGKILL), JAX alone ends the others badly: a collective
that was under way raises "Gloo AllGather failed: ... Connection closed by peer", the interpreter's
exit then waits in the coordination service's shutdown barrier, and when the dead peer misses its
heartbeats (`--heartbeat_timeout`, 100 s by default) the client's background thread LOG(FATAL)s:
SIGABRT, a C++ stack trace and a core file. A collective inside a jitted step may not raise at all
and just waits for that abort. JAX (0.10.2) offers no usable hook: `initialize` does not expose the
client's `missed_heartbeat_callback`, and passing a Python one to the client crashes (its absl::Status
argument cannot be converted). So this module ends the process itself:

- `exit_if_peer_lost(error, ...)`: the training loop calls it on any exception; a lost-peer error
  becomes one line on stderr and `os._exit(PEER_LOST)`. `os._exit` skips atexit, where JAX's
  shutdown barrier would wait for the dead peer and then abort.
- a SIGABRT handler for the aborts that cannot be beaten: when process 0 (which hosts the
  coordination service) dies, the others' clients LOG(FATAL) at once, from a C++ thread; when another
  process dies and a collective hangs instead of raising, process 0's client LOG(FATAL)s once the
  heartbeat timeout has passed. A Python `signal.signal` handler would never run (abort() re-raises
  with the default action first), so the handler is a C-callable made with ctypes. It prints the
  line and `os._exit`s when the coordinator's port no longer answers, or when one peer's heartbeats
  in the key-value store (`_PeerWatch`, one counter per process, bumped every second) have stopped;
  otherwise it restores the default action and aborts as before, so real crashes keep their core
  files. absl has already printed its "Terminating process ..." message and stack by then: the
  line comes last. Gloo can also abort (std::terminate on a broken transfer) before that evidence
  exists, so the handler looks again for a few seconds before it decides.
- a `threading.excepthook` for background threads that fail on the lost peer (Orbax's commit
  thread waits at a coordination-service barrier the dead peer never reaches): the same test, the
  same line, instead of a traceback. Orbax's own signalling threads catch their error and log it
  with its traceback (absl's `logging.exception`) instead: a filter on absl's logger applies the
  same test to such a record before it is printed.
"""

from __future__ import annotations

import argparse
import ctypes
import inspect
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable

import jax

from orca_jax.errors import ConfigError

PEER_LOST = 3  # the exit status after a lost peer: not 1 (a crash) nor 2 (a user error)

# What JAX says when a peer is gone, found by killing one of two processes (jax 0.10.2, CPU/gloo):
# a collective's "Gloo AllGather failed: ... Connection closed by peer [127.0.0.1]:5808" (or "reset
# by peer"), and the coordination service's "Task 1 heartbeat timeout" / "tasks are unhealthy
# (stopped sending heartbeats):\n1" / "Shutdown barrier has failed".
_LOST = re.compile(r"Gloo \w+ failed|Connection (?:closed|reset) by peer|heartbeat|tasks are unhealthy|"
                   r"CoordinationServiceError|Shutdown barrier has failed")  # fmt: skip
_NAMED = re.compile(r"Task (\d+) heartbeat timeout|stopped sending heartbeats\):\s*(\d+)")
_KEY = "orca_jax/alive/"
_GRACE = 3.0  # seconds the abort handler waits for the training loop's own, more precise, line

_progress: Callable[[], tuple[int, str]] | None = None  # the training loop's (last step, checkpoint dir)
_prog = "orca"
_exiting = threading.Lock()


def add_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("multi-host")
    group.add_argument("--distributed", choices=("auto", "on", "off"), default="auto",
                       help="call jax.distributed.initialize: auto does on multi-host TPU and SLURM jobs")  # fmt: skip
    group.add_argument("--coordinator_address", default="", help="host:port of process 0")
    group.add_argument("--num_processes", type=int, default=0)
    group.add_argument("--process_id", type=int, default=-1)
    default = inspect.signature(jax.distributed.initialize).parameters["heartbeat_timeout_seconds"].default
    group.add_argument("--heartbeat_timeout", type=int, default=default,
                       help="seconds without heartbeats from a process before the others stop")  # fmt: skip


def on_multihost_cluster() -> bool:
    workers = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return (
        "," in workers or int(os.environ.get("SLURM_NTASKS", "1")) > 1 or "MEGASCALE_COORDINATOR_ADDRESS" in os.environ
    )


def initialize(args: argparse.Namespace, prog: str = "orca") -> None:
    """Joins the other processes when asked to (or on a multi-host cluster); with several, starts our
    heartbeats and the abort handler."""
    global _prog
    _prog = prog
    if args.heartbeat_timeout < 2:
        raise ConfigError(f"--heartbeat_timeout={args.heartbeat_timeout}: give at least 2 seconds")
    timeout = {"heartbeat_timeout_seconds": args.heartbeat_timeout}
    if args.coordinator_address:
        if args.num_processes < 1 or not 0 <= args.process_id < args.num_processes:
            raise ConfigError("--coordinator_address needs --num_processes N and --process_id in [0, N)")
        jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id, **timeout)
    elif args.distributed == "on" or (args.distributed == "auto" and on_multihost_cluster()):
        jax.distributed.initialize(**timeout)
    else:
        return
    if jax.process_count() > 1:
        _PeerWatch().start()
        _catch_coordinator_abort(args.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", ""))
        threading.excepthook = _on_thread_error
        logging.getLogger("absl").addFilter(_on_logged_thread_error)


def report_progress_with(progress: Callable[[], tuple[int, str]] | None) -> None:
    """Lets the abort handler's message say where to resume: `progress()` returns the last completed step
    and the newest checkpoint's folder ("" for none). It must not wait on other processes."""
    global _progress
    _progress = progress


def exit_if_peer_lost(error: BaseException, step: int, resume_from: str) -> None:
    """Ends this process with one line and status PEER_LOST if `error` says that a peer process is
    gone (a failed Gloo collective, a coordination-service error); otherwise returns, and the caller
    re-raises."""
    if jax.process_count() == 1:
        return
    texts = []
    while error is not None and len(texts) < 8:  # the error and what it was raised from
        texts.append(str(error))
        error = error.__cause__ or error.__context__
    text = "\n".join(texts)
    if not _LOST.search(text):
        return
    named = _NAMED.search(text)
    _exit(int(next(filter(None, named.groups()))) if named else None, step, resume_from)


def _exit(lost: int | None, step: int | None, resume_from: str | None) -> None:
    """Prints the one line and ends the process now (from any thread), without atexit or destructors.
    `step` and `resume_from` are None when unknown (an abort with no `report_progress_with`)."""
    if not _exiting.acquire(blocking=False):  # the other path (loop or abort) is exiting: let it
        threading.Event().wait()
    count = jax.process_count()
    if lost is None and count == 2:
        lost = 1 - jax.process_index()  # of two processes, the lost one is the other
    who = f"process {lost} of {count}" if lost is not None else f"a peer process (of {count})"
    at = f" (lost at step {step})" if step is not None else ""
    where = "resume from the latest checkpoint" if resume_from is None else (
        f"resume from {resume_from}" if resume_from else "start from scratch")  # fmt: skip
    sys.stdout.flush()
    print(f"{_prog}: {who} stopped{at}; restart every process to {where}", file=sys.stderr, flush=True)
    os._exit(PEER_LOST)


def _lost_peer(wait: float) -> int | None:
    """The process that is gone, from evidence that needs no collective: the coordinator's port closed
    (process 0), or a peer's key-value heartbeats stopped. A failure can surface here before its
    evidence does (gloo aborts the moment a transfer breaks), so look again for up to `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        if _coordinator and jax.process_index() != 0 and not _answers(_coordinator):
            return 0
        lost = _PeerWatch.instance.silent_peer() if _PeerWatch.instance is not None else None
        if lost is not None or time.monotonic() >= deadline:
            return lost
        time.sleep(0.5)  # releases the GIL: our heartbeat thread keeps reading the peers' counters


def _evidence_wait() -> float:
    """Long enough for a dead peer's heartbeats to count as stopped (see _PeerWatch.silent_peer)."""
    return 3 * _PeerWatch.instance.interval + 2 if _PeerWatch.instance is not None else 0.0


def _on_thread_error(hook_args: threading.ExceptHookArgs) -> None:
    """A background thread's exception (Orbax's commit thread waits at a barrier a dead peer never
    reaches): with a lost peer, the one line and exit; otherwise the default report."""
    lost = _lost_peer(_evidence_wait())
    if lost is not None:
        _exit(lost, *_progress_or_none())
    threading.__excepthook__(hook_args)


def _on_logged_thread_error(record: logging.LogRecord) -> bool:
    """A background thread's error that Orbax logs with its traceback: with a lost peer, the one line
    and exit before it is printed; any other record passes."""
    if record.exc_info and threading.current_thread() is not threading.main_thread():
        lost = _lost_peer(_evidence_wait())
        if lost is not None:
            _exit(lost, *_progress_or_none())
    return True


@ctypes.CFUNCTYPE(None, ctypes.c_int)
def _on_abort(signum: int) -> None:
    """Runs on the aborting C++ thread (ctypes takes the GIL): a lost peer ends cleanly, anything else
    aborts as it would have (a few seconds later: the time it takes to rule out a lost peer)."""
    lost = _lost_peer(_evidence_wait())
    if lost is not None:
        if _progress is None:  # the main thread's failed collective knows the step: give it a moment
            time.sleep(_GRACE)
        _exit(lost, *_progress_or_none())
    _libc.signal(signal.SIGABRT, signal.SIG_DFL)  # signal.signal works only on the main thread
    os.abort()


_coordinator = ""
_libc = ctypes.CDLL(None)
_libc.signal.restype, _libc.signal.argtypes = ctypes.c_void_p, (ctypes.c_int, ctypes.c_void_p)


def _catch_coordinator_abort(address: str) -> None:
    global _coordinator
    _coordinator = address
    _libc.signal(signal.SIGABRT, ctypes.cast(_on_abort, ctypes.c_void_p))


def _answers(address: str) -> bool:
    """Whether something still listens at host:port (the coordination service, for process 0)."""
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=2).close()
        return True
    except OSError:
        return False


def _progress_or_none() -> tuple[int | None, str | None]:
    try:
        return _progress() if _progress else (None, None)
    except Exception:  # the line matters more than its details
        return None, None


class _PeerWatch(threading.Thread):
    """Heartbeats of our own over the coordination service's key-value store, kept only as evidence
    for the abort handler: they never end the process themselves, because a Python thread can be
    starved of the GIL for seconds under load (a first try that judged peers on them killed healthy
    runs on a busy machine); JAX's C++ heartbeats remain the judge."""

    instance: _PeerWatch | None = None  # one per process

    def __init__(self, interval: float = 1.0):
        super().__init__(name="orca-peer-watch", daemon=True)
        from jax._src import distributed as jax_distributed  # the client JAX made; no public accessor

        self.client, self.interval = jax_distributed.global_state.client, interval
        self.me, self.count = jax.process_index(), jax.process_count()
        self.seen: dict[int, tuple[str, float]] = {}  # peer -> (its last counter, when it last changed)
        _PeerWatch.instance = self

    def run(self) -> None:
        beat = 0
        while True:
            beat += 1
            try:
                self.client.key_value_set(f"{_KEY}{self.me}", str(beat), allow_overwrite=True)
                values = dict(self.client.key_value_dir_get(_KEY))
            except Exception:  # the coordinator is gone (the abort handler checks its port) or shutting down
                return
            now = time.monotonic()
            for peer in range(self.count):
                value = values.get(f"{_KEY}{peer}", "")
                if self.seen.get(peer, ("", 0.0))[0] != value:
                    self.seen[peer] = (value, now)
            time.sleep(self.interval)

    def silent_peer(self) -> int | None:
        """The peer whose heartbeat has stopped the longest, if for more than a few beats."""
        now, seen = time.monotonic(), dict(self.seen)
        silent = {p: now - t for p, (_, t) in seen.items() if p != self.me and now - t > 3 * self.interval + 1}
        return max(silent, key=silent.get) if silent else None
