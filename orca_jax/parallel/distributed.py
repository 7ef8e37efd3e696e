"""Multi-host start-up: `jax.distributed.initialize` before anything touches a device.

On a Cloud TPU pod slice (or a SLURM GPU job) every host runs the same command and JAX finds its
peers from the environment; elsewhere (several processes on one machine, a cluster of your own)
pass the coordinator explicitly:

    orca-train ... --coordinator_address=host0:8476 --num_processes=2 --process_id=0
"""

from __future__ import annotations

import argparse
import os

import jax

from orca_jax.errors import ConfigError


def add_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("multi-host")
    group.add_argument("--distributed", choices=("auto", "on", "off"), default="auto",
                       help="call jax.distributed.initialize: auto does on multi-host TPU and SLURM jobs")  # fmt: skip
    group.add_argument("--coordinator_address", default="", help="host:port of process 0")
    group.add_argument("--num_processes", type=int, default=0)
    group.add_argument("--process_id", type=int, default=-1)


def on_multihost_cluster() -> bool:
    workers = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return (
        "," in workers or int(os.environ.get("SLURM_NTASKS", "1")) > 1 or "MEGASCALE_COORDINATOR_ADDRESS" in os.environ
    )


def initialize(args: argparse.Namespace) -> None:
    if args.coordinator_address:
        if args.num_processes < 1 or not 0 <= args.process_id < args.num_processes:
            raise ConfigError("--coordinator_address needs --num_processes N and --process_id in [0, N)")
        jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
    elif args.distributed == "on" or (args.distributed == "auto" and on_multihost_cluster()):
        jax.distributed.initialize()
