"""Every sharding decision, on one screen: the mesh, the logical-axis rules, batches as global arrays.

The mesh has three axes, in this order:
    data    pure data parallelism: parameters replicated, batch split.
    fsdp    data parallelism with parameters, gradients and optimizer state split (ZeRO-3).
    tensor  tensor (Megatron) parallelism: heads and MLP columns split, activations all-reduced.

Model code names array dimensions logically ("embed", "mlp", ...); `LOGICAL_AXIS_RULES` maps each
name to mesh axes, first match wins. A dimension whose name maps to None is replicated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from orca_jax.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")

LOGICAL_AXIS_RULES = (
    # Activations.
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    # Parameters: FSDP shards d_model, tensor parallelism shards heads, MLP and vocabulary.
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    # The input embedding table is split on its rows only: splitting both of its dimensions makes
    # XLA fully rematerialize the table around the token gather.
    ("table_vocab", ("tensor", "fsdp")),
    ("table_embed", None),
    ("head_dim", None),
    ("norm", None),
    ("layers", None),
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Sizes of the mesh axes within a slice (ICI), one of which may be -1 (all devices left over),
    and across slices (DCN; multi-slice TPU jobs). The mesh axis sizes are the products."""

    data: int = 1
    fsdp: int = -1
    tensor: int = 1
    dcn_data: int = 1
    dcn_fsdp: int = 1
    dcn_tensor: int = 1

    @property
    def dcn_shape(self) -> tuple[int, int, int]:
        return (self.dcn_data, self.dcn_fsdp, self.dcn_tensor)

    def shape(self, num_devices: int) -> tuple[int, int, int]:
        """Per-slice (ICI) axis sizes for `num_devices` devices in all slices."""
        if any(s < 1 for s in self.dcn_shape):
            raise ConfigError(f"MeshConfig dcn sizes {self.dcn_shape}: must be positive")
        slices = math.prod(self.dcn_shape)
        if num_devices % slices:
            raise ConfigError(f"MeshConfig: {num_devices} devices do not split into {slices} slices")
        num_devices //= slices
        sizes = [self.data, self.fsdp, self.tensor]
        if sizes.count(-1) > 1:
            raise ConfigError(f"MeshConfig {sizes}: at most one axis may be -1")
        if any(s == 0 or s < -1 for s in sizes):
            raise ConfigError(f"MeshConfig {sizes}: sizes must be positive, or -1 to fill")
        known = math.prod(s for s in sizes if s != -1)
        if -1 in sizes:
            if num_devices % known:
                raise ConfigError(f"MeshConfig {sizes}: {num_devices} devices do not divide by {known}")
            sizes[sizes.index(-1)] = num_devices // known
        if math.prod(sizes) != num_devices:
            raise ConfigError(f"MeshConfig {sizes}: needs {math.prod(sizes)} devices, there are {num_devices}")
        return tuple(sizes)


def make_mesh(config: MeshConfig, devices: list | None = None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    ici = config.shape(len(devices))
    if math.prod(config.dcn_shape) > 1:  # several slices: DCN-aware placement
        grid = mesh_utils.create_hybrid_device_mesh(ici, config.dcn_shape, devices)
    else:
        try:
            grid = mesh_utils.create_device_mesh(ici, devices)
        except (AssertionError, NotImplementedError, ValueError):
            grid = np.array(devices).reshape(ici)  # no physical-topology layout for these devices
    return Mesh(grid, MESH_AXES)  # Auto axis types, so logical sharding constraints apply


def logical_to_sharding(logical_specs, mesh: Mesh):
    """Tree of logical PartitionSpecs -> tree of NamedShardings on `mesh`."""
    return nn.logical_to_mesh_sharding(logical_specs, mesh, LOGICAL_AXIS_RULES)


def shardings_of(boxed_tree, mesh: Mesh):
    """NamedSharding for every leaf of a tree boxed with logical axis names (params, a train state).
    A dimension that does not split evenly over its mesh axes is a ConfigError naming it."""
    shardings = logical_to_sharding(nn.get_partition_spec(boxed_tree), mesh)
    leaves = jax.tree_util.tree_flatten_with_path(strip_axis_names(boxed_tree))[0]
    for (path, leaf), named in zip(leaves, jax.tree.leaves(shardings), strict=True):
        for dim, (size, axes) in enumerate(zip(leaf.shape, named.spec, strict=False)):
            axes = (axes,) if isinstance(axes, str) else axes or ()
            shards = math.prod(mesh.shape[a] for a in axes)
            if size % shards:
                raise ConfigError(
                    f"{jax.tree_util.keystr(path)}: dimension {dim} of shape {tuple(leaf.shape)} has size {size}, "
                    f"which does not split over mesh axes {axes} ({shards} shards); change MeshConfig"
                )
    return shardings


def describe_param_shardings(boxed_params) -> list[str]:
    """One line per parameter: name, shape, dtype and its mesh PartitionSpec (for the golden file)."""
    specs = nn.logical_to_mesh(nn.get_partition_spec(boxed_params), LOGICAL_AXIS_RULES)
    leaves = jax.tree_util.tree_flatten_with_path(strip_axis_names(boxed_params))[0]
    return [
        f"{jax.tree_util.keystr(path)} {tuple(leaf.shape)} {leaf.dtype} {spec}"
        for (path, leaf), spec in zip(
            leaves, jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec)), strict=True
        )
    ]


def strip_axis_names(tree):
    """Removes the logical-axis boxes (without the sharding constraint that nn.unbox would add)."""
    return jax.tree.map(
        lambda x: x.value if isinstance(x, nn.Partitioned) else x, tree, is_leaf=lambda x: isinstance(x, nn.Partitioned)
    )


# The mesh axes a batch's rows split over, as the rules table says.
BATCH_AXES = dict(LOGICAL_AXIS_RULES)["batch"]


def batch_shards(mesh: Mesh) -> int:
    """How many slices of rows a batch splits into: its size must be a multiple of this."""
    return math.prod(mesh.shape[axis] for axis in BATCH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batches are split over BATCH_AXES on their first dimension."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def global_batch(host_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This host's rows -> global arrays whose first dimension spans all hosts."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in host_batch.items()}


def host_batch_size(global_batch_size: int, mesh: Mesh) -> int:
    """Rows this host feeds; the global batch must split evenly over hosts and batch shards."""
    shards = batch_shards(mesh)
    if global_batch_size % shards:
        raise ConfigError(f"batch size {global_batch_size} does not divide over {shards} batch shards {BATCH_AXES}")
    if global_batch_size % jax.process_count():
        raise ConfigError(f"batch size {global_batch_size} does not divide over {jax.process_count()} hosts")
    return global_batch_size // jax.process_count()


@contextlib.contextmanager
def use_mesh(mesh: Mesh):
    """Traces inside this context resolve logical sharding constraints on `mesh`."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_AXIS_RULES):
        yield mesh


# XLA:CPU options for the programs that run hot on CPU (the train step, decoding), passed to those
# compilations only. YNNPACK's dot fusions, XLA:CPU's default, ran a decode step's small-batch
# matmuls and the train step's matmuls 5-15% slower than Eigen's dots (BENCHMARKS.md).
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def target_platform() -> str:
    """The platform the program being traced is compiled for: the mesh's devices under `use_mesh`
    (a step compiled on this CPU host for a TPU topology says 'tpu'), else the default backend."""
    mesh = jax.sharding.get_abstract_mesh()
    device = None if mesh.empty else mesh.abstract_device
    return device.platform if device is not None else jax.default_backend()
