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

Kernels written in Pallas (Mosaic custom calls, such as splash attention) carry no estimate at all:
summing only XLA's figures would count them as free. Splash attention's kernels are priced here at
their matmul FLOPs at the chip's peak (`custom_kernel_flops`): a floor on their time, reported
apart (`Estimate.custom_kernel_seconds`) so that a reader can scale it to a kernel efficiency. Any
other Mosaic kernel is listed in `Estimate.unpriced_kernels` and counted as free.
"""

from __future__ import annotations

import glob
import math
import os
import re
import tempfile
from typing import NamedTuple

import jax
import jax.numpy as jnp

from orca_jax.parallel import topology

_HEADER = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\{$")
_CYCLES = re.compile(r'"estimated_cycles":"(\d+)"')
_WHILE = re.compile(r" while\(.*condition=%([\w.\-]+), body=%([\w.\-]+)")
_CONSTANT = re.compile(r"[su]32\[\]\S* constant\((\d+)\)")
_INSTRUCTION = re.compile(r"^\s+(?:ROOT )?%")
_MOSAIC = 'custom_call_target="tpu_custom_call"'
_SPLASH = re.compile(r"^\s+(?:ROOT )?%splash_mha_(fwd|dq|dkv)")
# Matmuls of [T, E] x [E, S] size per head that each splash kernel computes: forward S = QK^T and
# O = PV; dq recomputes S, then dP = dO V^T and dQ = dS K; dkv recomputes S, then dP, dV = P^T dO
# and dK = dS^T Q.
SPLASH_MATMULS = {"fwd": 2, "dq": 3, "dkv": 4}


def computations(hlo_text: str) -> tuple[dict[str, list[str]], str]:
    """HLO text -> {computation name: its instructions, one line each}, and the entry computation's
    name. (An instruction's attributes can span lines, e.g. a Pallas kernel's metadata.)"""
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
        elif _INSTRUCTION.match(line) or not comps[current]:
            comps[current].append(line)
        else:
            comps[current][-1] += "\n" + line
    return comps, entry


def custom_kernel_flops(instruction: str) -> float | None:
    """Matmul FLOPs of a splash attention kernel (one instruction of compiled TPU HLO), or None for
    any other instruction. Its q, k and v operands are [..., T, E]; the kernel skips the blocks its
    causal mask rules out, [n, n] blocks of which n (n + 1) / 2 are computed."""
    match = _SPLASH.match(instruction)
    if not match or _MOSAIC not in instruction:
        return None
    constraints = re.search(r"operand_layout_constraints=\{(.*?)\}, \w+=", instruction, flags=re.DOTALL)
    shapes = re.findall(r"(\w+)\[([\d,]+)\]", constraints.group(1) if constraints else "")
    blocks = [tuple(map(int, dims.split(","))) for dtype, dims in shapes if dtype == "s8"]
    qkv = [tuple(map(int, dims.split(","))) for dtype, dims in shapes if dtype in ("bf16", "f32", "f16")]
    if not blocks or not qkv:
        return None
    *heads, length, head_size = qkv[0]
    n = blocks[0][-1]
    causal_share = n * (n + 1) / 2 / n**2
    per_matmul = 2 * math.prod(heads) * length * length * head_size * causal_share
    return SPLASH_MATMULS[match.group(1)] * per_matmul


def trip_count(condition: list[str]) -> int | None:
    """A counted loop's condition compares its counter (from 0, step 1) with one constant."""
    constants = [int(m.group(1)) for line in condition if (m := _CONSTANT.search(line))]
    return max(constants) if len(constants) == 1 else None


class Cycles(NamedTuple):
    total: float  # XLA's kernel estimates, plus the priced custom kernels
    custom_kernels: float  # the priced custom kernels' part of `total`
    uncounted_loops: list[str]  # loops of unknown trip count, counted once: the estimate is then low
    unpriced_kernels: list[str]  # Mosaic kernels without an estimate or a price, counted as free


def program_cycles(hlo_text: str, cycles_per_flop: float = 0.0) -> Cycles:
    """Estimated cycles of one run of the program. Splash kernels cost their FLOPs times
    `cycles_per_flop` (0: free, and listed as unpriced)."""
    comps, entry = computations(hlo_text)
    memo: dict[str, tuple[float, float]] = {}  # computation -> (cycles, custom kernels' cycles)
    uncounted: list[str] = []
    unpriced: list[str] = []

    def cycles(name: str) -> tuple[float, float]:
        if name not in memo:
            total = custom = 0.0
            for line in comps[name]:
                if loop := _WHILE.search(line):
                    condition, body = loop.groups()
                    trips = trip_count(comps[condition])
                    if trips is None:
                        uncounted.append(line.split("=", 1)[0].strip())
                    (body_total, body_custom), (cond_total, _) = cycles(body), cycles(condition)
                    total += (trips or 1) * (body_total + cond_total)
                    custom += (trips or 1) * body_custom
                elif match := _CYCLES.search(line):  # a kernel; a fusion's inner computation is part of it
                    total += int(match.group(1))
                elif _MOSAIC in line:
                    flops = custom_kernel_flops(line)
                    if flops is None or not cycles_per_flop:
                        unpriced.append(line.split("=", 1)[0].strip())
                    else:
                        total += flops * cycles_per_flop
                        custom += flops * cycles_per_flop
            memo[name] = (total, custom)
        return memo[name]

    total, custom = cycles(entry)
    return Cycles(total, custom, uncounted, sorted(set(unpriced)))


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
    return cost["optimal_seconds"] / program_cycles(text).total


class Estimate(NamedTuple):
    seconds: float
    custom_kernel_seconds: float  # splash kernels at their FLOPs at peak: part of `seconds`, a floor
    uncounted_loops: list[str]
    unpriced_kernels: list[str]


def estimated_seconds(hlo_text: str, device: jax.Device) -> Estimate:
    """XLA's estimated run time of a compiled program (see the module docstring), from its final HLO
    text, with splash kernels at their FLOPs at the chip's peak."""
    rate = seconds_per_cycle(device)
    peak = topology.peak_flops_per_device(device)
    c = program_cycles(hlo_text, 1 / (peak * rate) if peak else 0.0)
    return Estimate(c.total * rate, c.custom_kernels * rate, c.uncounted_loops, c.unpriced_kernels)
