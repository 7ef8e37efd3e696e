"""TPU slices by the names users type (v4-32, v5litepod-64, v5p-128, v6e-16), for compiling ahead
of time on a host without TPUs.

libtpu's compiler describes a slice by a physical chip grid ("v5e:4x4", "v4:2x2x4"), a chip config
(v4 and v5p run megacore: the chip's two TensorCores as one JAX device), how many chips each host
holds, and which grid axes wrap around into a torus. `TpuSlice.devices()` hands that description
to `jax.experimental.topologies.get_topology_desc` and returns its compile-only devices, on which a
Mesh can be built exactly as on the real slice.

Naming: v4-N and v5p-N count TensorCores (two per chip), v5litepod-N (or v5e-N) and v6e-N count
chips. v4 and v5p slices of 64 chips or more are whole 4x4x4 cubes, which wrap on all three axes;
v5e and v6e wrap an axis only when it spans the full pod (16 chips).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import re

import jax

from orca_jax.errors import ConfigError, UserError

# Dense bf16 peak FLOP/s per chip (per device JAX sees).
PEAK_FLOPS = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,  # v5e
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,  # v6e (Trillium)
    "TPU v6e": 918e12,
    "A100": 312e12,
    "H100": 989e12,
    "H200": 989e12,
}


def peak_flops_per_device(device: jax.Device | None = None) -> float | None:
    """The table's peak for this device kind (longest matching name), or None (e.g. a CPU)."""
    kind = (device or jax.devices()[0]).device_kind
    matches = [name for name in PEAK_FLOPS if name in kind]
    return PEAK_FLOPS[max(matches, key=len)] if matches else None


GiB = 1024**3


@dataclasses.dataclass(frozen=True)
class Generation:
    prefix: str  # libtpu's topology prefix
    device_kind: str  # what JAX reports for one device
    chip_config: str
    counts_cores: bool  # the slice name counts TensorCores, two per chip
    hbm_bytes: int  # per chip, as Cloud TPU documents it
    max_chips: int  # one pod

    @property
    def peak_flops(self) -> float:
        """Dense bf16 FLOP/s per chip: the table MFU is computed with everywhere (PEAK_FLOPS above)."""
        return PEAK_FLOPS[self.device_kind]


GENERATIONS = {
    "v4": Generation("v4", "TPU v4", "megacore", True, 32 * GiB, 4096),
    # Cloud TPU lists v5p as "95 GB"; libtpu's compiler offers a program 95.73 GiB of it, so the part is
    # 96 GiB (the gap to 95.73 is what the runtime reserves, as on the other chips).
    "v5p": Generation("v5", "TPU v5", "megacore", True, 96 * GiB, 8960),
    "v5e": Generation("v5e", "TPU v5 lite", "default", False, 16 * GiB, 256),
    "v6e": Generation("v6e", "TPU v6 lite", "default", False, 32 * GiB, 256),
}
ALIASES = {"v4": "v4", "v5p": "v5p", "v5e": "v5e", "v5litepod": "v5e", "v6e": "v6e"}
# v5e and v6e grids by chip count; single-host slices (up to 8 chips) hold all their chips on one host.
GRIDS_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16), 256: (16, 16)}
# v4 and v5p grids below one cube (64 chips).
SMALL_GRIDS_3D = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4)}
CUBE = 4  # v4 and v5p slices of 64 chips and more are made of 4x4x4 cubes

VALID_FORMS = (
    "v4-N or v5p-N (N TensorCores, two per chip: 8, 16, 32, 64 or a multiple of 128; up to v4-8192, v5p-17920), "
    f"v5litepod-N, v5e-N or v6e-N (N chips: {', '.join(map(str, GRIDS_2D))})"
)


@dataclasses.dataclass(frozen=True)
class TpuSlice:
    name: str  # as the user typed it
    generation: Generation
    grid: tuple[int, ...]  # chips along each physical axis
    num_slices: int = 1

    @property
    def chips(self) -> int:
        """Chips in one slice (one JAX device each)."""
        return math.prod(self.grid)

    @property
    def topology_name(self) -> str:
        return f"{self.generation.prefix}:{'x'.join(map(str, self.grid))}"

    @property
    def wrap(self) -> tuple[bool, bool, bool]:
        if len(self.grid) == 3:
            full_cubes = self.chips >= CUBE**3
            return (full_cubes,) * 3
        return (self.grid[0] == 16, self.grid[1] == 16, False)

    @property
    def chips_per_host_bounds(self) -> tuple[int, int, int]:
        if len(self.grid) == 2 and self.chips <= 8:  # single-host v5e/v6e slices
            return (*self.grid, 1)
        return (2, 2, 1)  # four chips per host

    def describe(self) -> str:
        slices = f"{self.num_slices} x " if self.num_slices > 1 else ""
        return f"{slices}{self.name} ({self.topology_name}, {self.chips} chips per slice)"

    def devices(self) -> list:
        """The slice's compile-only devices (every slice's, in slice order), from libtpu."""
        if importlib.util.find_spec("libtpu") is None:
            raise UserError(
                "compiling for a TPU topology needs libtpu, which is not installed here: "
                "pip install -e '.[tpu]' (no TPU is needed; libtpu only compiles)"
            )
        # libtpu takes a lock file so that only one process drives a machine's TPUs; a compile-only
        # client drives none, so several compiles (and tests) may run side by side.
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
        from jax.experimental.topologies import get_topology_desc

        try:
            desc = get_topology_desc(
                platform="tpu",
                topology_name=self.topology_name,
                chip_config_name=self.generation.chip_config,
                chips_per_host_bounds=self.chips_per_host_bounds,
                num_slices=self.num_slices,
                wrap=self.wrap,
            )
        except Exception as e:  # libtpu raises bare runtime errors; one line says which topology failed
            raise UserError(f"libtpu could not describe {self.describe()}: {' '.join(str(e).split())}") from None
        return list(desc.devices)


def parse_slice(name: str, num_slices: int = 1) -> TpuSlice:
    """`v5p-128` -> the slice; a name libtpu has no grid for is a ConfigError listing the valid forms."""
    if num_slices < 1:
        raise ConfigError(f"--num_slices {num_slices}: must be at least 1")
    match = re.fullmatch(r"(v4|v5p|v5e|v5litepod|v6e)-(\d+)", name.strip().lower())
    if not match:
        raise ConfigError(f"unknown TPU slice {name!r}: valid forms are {VALID_FORMS}")
    generation = GENERATIONS[ALIASES[match.group(1)]]
    count = int(match.group(2))
    grid = grid_for(generation, count)
    if grid is None:
        unit = "TensorCores" if generation.counts_cores else "chips"
        raise ConfigError(f"no {match.group(1)} slice has {count} {unit}: valid forms are {VALID_FORMS}")
    return TpuSlice(name.strip(), generation, grid, num_slices)


def grid_for(generation: Generation, count: int) -> tuple[int, ...] | None:
    """The chip grid of a slice named with `count` (TensorCores or chips), or None if there is none."""
    if not generation.counts_cores:
        return GRIDS_2D.get(count)
    if count % 2:
        return None
    chips = count // 2
    if chips in SMALL_GRIDS_3D:
        return SMALL_GRIDS_3D[chips]
    if chips % CUBE**3 or chips > generation.max_chips:
        return None
    return tuple(CUBE * c for c in cube_layout(chips // CUBE**3))


def cube_layout(cubes: int) -> tuple[int, int, int]:
    """`cubes` as a x b x c cubes, a <= b <= c, as close to a cube as factors allow: the shape Cloud
    TPU allocates (e.g. 2 cubes: 1x1x2 -> 4x4x8; 12 cubes: 2x2x3 -> 8x8x12)."""
    layouts = [
        (a, b, cubes // (a * b))
        for a in range(1, cubes + 1)
        for b in range(a, cubes + 1)
        if cubes % (a * b) == 0 and cubes // (a * b) >= b
    ]
    return min(layouts, key=lambda abc: (abc[2], -abc[0]))
