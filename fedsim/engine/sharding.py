"""The client axis over several devices: a one-axis ``jax.sharding.Mesh`` named ``clients``.

``config.devices`` picks how many devices share a round's clients (1: one device, no mesh; 0: every
device JAX sees, all hosts included after ``jax.distributed.initialize()``). Each device runs its slice
of the sampled clients (``fedsim.engine.round``) and the aggregate is a ``psum`` across the mesh;
server state, per-client state and the federation are replicated on every device.
"""

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fedsim.errors import ConfigError

CLIENT_AXIS = "clients"


def client_mesh(devices: int) -> Mesh | None:
    """The mesh of the first ``devices`` devices (``0`` = all), or None for a single device."""
    available = jax.devices()
    if not 0 <= devices <= len(available):
        raise ConfigError(
            f"devices={devices}: accepted 0 (all) or 1..{len(available)}, the devices JAX sees "
            f"({available[0].platform}); for fake CPU devices set "
            "XLA_FLAGS=--xla_force_host_platform_device_count=N"
        )
    chosen = available if devices == 0 else available[:devices]
    if len(chosen) == 1:
        return None
    return Mesh(chosen, (CLIENT_AXIS,))


def replicate(tree, mesh: Mesh | None):
    """``tree`` placed whole on every device of ``mesh`` (unchanged without a mesh)."""
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
