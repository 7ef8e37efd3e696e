"""XLA's own run-time estimate for a compiled TPU program, with loops counted as often as they run.

`compiled.cost_analysis()["optimal_seconds"]` is the TPU compiler's estimate of a program's run
time, but for orca-train's step it is unusable: it counts the body of every while loop once (the
scan over layers runs 40 times for LLaMA-13B, and the windowed-einsum loops inside a layer run once
per shard), and it comes out negative by whole seconds for programs holding ops it has no model for
(the embedding's gather and scatter, async collectives: each appears to count as -1 s). Both were
checked on small programs against their unrolled forms (tests/test_compile.py).

The compiled HLO itself carries the compiler's estimate for each kernel it emitted
(`"estimated_cycles"` in the instruction's backend config). Summing those over the program, each
while loop's body and condition times its trip count (the constant its condition compares the
counter with), gives XLA's estimate for the whole step in cycles. Cycles become seconds on the scale
of XLA's own cost analysis, measured here on a one-kernel program (an 8192^3 bf16 matmul, for which
`optimal_seconds` is well defined and equals its FLOPs at the chip's peak): a kernel as efficient
as that matmul counts as running at peak, so the estimate leans optimistic.

What it leaves out: XLA estimates no time for collectives and DMA copies, which run asynchronously
beside the kernels: the estimate assumes they are hidden behind compute, as XLA schedules them to
be. Treat it as the step time of a well-overlapped program, not as a measurement.
"""

from __future__ import annotations

import glob
import os
import re
import tempfile

import jax
import jax.numpy as jnp

_HEADER = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\{$")
_CYCLES = re.compile(r'"estimated_cycles":"(\d+)"')
_WHILE = re.compile(r" while\(.*condition=%([\w.\-]+), body=%([\w.\-]+)")
_CONSTANT = re.compile(r"[su]32\[\]\S* constant\((\d+)\)")


def computations(hlo_text: str) -> tuple[dict[str, list[str]], str]:
    """HLO text -> {computation name: its instruction lines}, and the entry computation's name."""
    comps: dict[str, list[str]] = {}
    current, entry = None, ""
    for line in hlo_text.splitlines():
        if current is None:
            if match := _HEADER.match(line):
                current = match.group(1)
                comps[current] = []
                entry = current if line.startswith("ENTRY") else entry
        elif line == "}":
            current = None
        else:
            comps[current].append(line)
    return comps, entry


def trip_count(condition: list[str]) -> int | None:
    """A counted loop's condition compares its counter (from 0, step 1) with one constant."""
    constants = [int(m.group(1)) for line in condition if (m := _CONSTANT.search(line))]
    return max(constants) if len(constants) == 1 else None


def program_cycles(hlo_text: str) -> tuple[int, list[str]]:
    """Estimated cycles of one run of the program; also the loops whose trip count was not found
    (counted once: the estimate is then low)."""
    comps, entry = computations(hlo_text)
    memo: dict[str, int] = {}
    uncounted: list[str] = []

    def cycles(name: str) -> int:
        if name not in memo:
            total = 0
            for line in comps[name]:
                if loop := _WHILE.search(line):
                    condition, body = loop.groups()
                    trips = trip_count(comps[condition])
                    if trips is None:
                        uncounted.append(line.split("=", 1)[0].strip())
                    total += (trips or 1) * (cycles(body) + cycles(condition))
                elif match := _CYCLES.search(line):  # a kernel; a fusion's inner computation is part of it
                    total += int(match.group(1))
            memo[name] = total
        return memo[name]

    return cycles(entry), uncounted


def compile_with_hlo(lowered: jax.stages.Lowered) -> tuple[jax.stages.Compiled, str]:
    """Compiles `lowered`; returns the executable and its final HLO text (after TPU code generation,
    with the per-kernel estimates). The text comes from XLA's dump, because reading it back through
    `compiled.as_text()` fails for large sharded programs (jaxlib cannot parse some of libtpu's
    async collectives). Dump options change no compiled code."""
    with tempfile.TemporaryDirectory(prefix="orca_compile_") as dump:
        compiled = lowered.compile(
            compiler_options={"xla_dump_to": dump, "xla_dump_hlo_as_text": True, "xla_dump_hlo_pass_re": "^$"}
        )
        texts = glob.glob(os.path.join(dump, "*.after_codegen.txt"))
        if len(texts) != 1:
            raise RuntimeError(f"expected one compiled HLO module in XLA's dump, found {len(texts)}")
        with open(texts[0]) as f:
            return compiled, f.read()


_RATES: dict[str, float] = {}  # device kind -> seconds per cycle


def seconds_per_cycle(device: jax.Device) -> float:
    """The rate at which XLA's cost analysis turns this chip's kernel cycles into seconds, from a
    one-kernel program (an 8192^3 bf16 matmul) compiled for `device`."""
    if device.device_kind not in _RATES:
        _RATES[device.device_kind] = _measure_seconds_per_cycle(device)
    return _RATES[device.device_kind]


def _measure_seconds_per_cycle(device: jax.Device) -> float:
    spec = jax.ShapeDtypeStruct((8192, 8192), jnp.bfloat16, sharding=jax.sharding.SingleDeviceSharding(device))
    compiled, text = compile_with_hlo(jax.jit(jnp.matmul).lower(spec, spec))
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    cycles, _ = program_cycles(text)
    return cost["optimal_seconds"] / cycles


def estimated_seconds(hlo_text: str, device: jax.Device) -> tuple[float, list[str]]:
    """XLA's estimated run time of a compiled program (see the module docstring), from its final
    HLO text, and any loops whose trip count was not found."""
    cycles, uncounted = program_cycles(hlo_text)
    return cycles * seconds_per_cycle(device), uncounted
