"""One federated round as one pure, jittable function.

Clients are sampled with ``fold_in(key, round)``: ``K`` of them without replacement, or (Poisson
sampling, for DP accounting) each client independently with probability ``q = K / N``, run in a fixed
number of slots that the joined clients fill (the rest are padding). Each client's randomness is
``fold_in(round_key, client_id)``, so results do not depend on how clients are chunked. The sampled
clients run in chunks: ``lax.scan`` over chunks, ``vmap(client_update)`` inside a chunk, their
contributions streamed into one running sum, so memory grows with the chunk size, not with the number of
clients per round. Over several devices (a mesh, ``fedsim.engine.sharding``) each device streams its
share of the slots and the totals are summed across devices. Clients whose results are non-finite are
excluded and counted; their state is kept. An algorithm with ``stacked=True`` (robust aggregation) gets
every slot's contribution instead of the sum: the scan stacks them (memory then grows with the slots),
with the excluded ones and the padding zeroed and marked invalid. Every round also has a simulated
duration (``fedsim.engine.faults.job_durations``): a sampled round lasts until its slowest client
reports; an asynchronous algorithm (``schedule``, FedBuff) picks the round's clients itself and says
how long its round took.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

from fedsim.algorithms.base import Dataset, FederatedAlgorithm, Stacked
from fedsim.algorithms.task import Federation, client_task
from fedsim.engine import aggregate
from fedsim.engine import faults as faults_lib
from fedsim.engine.sharding import CLIENT_AXIS


class RoundMetrics(NamedTuple):
    """Per sampling slot, in sampling order: ``[K]`` each (Poisson: ``[poisson_slots(N, K)]``),
    and the round's simulated duration."""

    client_ids: jax.Array
    loss: jax.Array
    num_examples: jax.Array
    up_bytes: jax.Array
    down_bytes: jax.Array
    failed: jax.Array  # bool: excluded from the aggregate (non-finite update or dropout)
    dropped: jax.Array  # bool: dropped out (simulated fault), a subset of ``failed``
    participated: jax.Array  # bool: a client sat in this slot (always, with fixed-size sampling)
    sim_time: jax.Array  # float32 scalar: simulated time the round took


def poisson_slots(num_clients: int, clients_per_round: int) -> int:
    """Slots for Poisson sampling: the expected ``K`` plus six standard deviations (at most ``N``).

    More joiners than slots happens with probability below 1e-9 a round; the extra ones sit out.
    """
    q = clients_per_round / num_clients
    spread = math.sqrt(clients_per_round * (1 - q))
    return min(num_clients, math.ceil(clients_per_round + 6 * spread) + 1)


def round_keys(key, round_index):
    """``(round_key, sample_key, client_key)`` of round ``round_index`` of the experiment's ``key``:
    ``sample_key`` draws the cohort (``sample_clients``), ``client_key`` the clients' own keys."""
    round_key = jax.random.fold_in(key, round_index)
    return (round_key, *jax.random.split(round_key))


def sample_clients(key, num_clients: int, clients_per_round: int, sampling: str):
    """``(ids, joined)``: the round's client ids per slot and whether a client sits in the slot."""
    if sampling == "fixed":
        ids = jax.random.choice(key, num_clients, (clients_per_round,), replace=False)
        return ids, jnp.ones((clients_per_round,), bool)
    slots = poisson_slots(num_clients, clients_per_round)
    draw = jax.random.uniform(key, (num_clients,))
    joins = draw < clients_per_round / num_clients
    # joined clients first, in random order (their draws are uniform below q)
    ids = jnp.argsort(jnp.where(joins, draw, 2.0))[:slots].astype(jnp.int32)
    joined = jnp.arange(slots) < jnp.sum(joins)
    return jnp.where(joined, ids, num_clients), joined


def _round_clients(algorithm, server_state, durations, key, clients_per_round: int, sampling: str):
    """``(server_state, ids, joined, sim_time)``: the clients an asynchronous algorithm schedules
    (its state advanced, its own duration), or the sampled ones, who take as long as the slowest."""
    if algorithm.schedule is not None:
        scheduled = algorithm.schedule(server_state, durations, key)
        ids = scheduled.client_ids
        return scheduled.server_state, ids, jnp.ones(ids.shape, bool), scheduled.sim_time
    num_clients = durations.shape[0]
    ids, joined = sample_clients(key, num_clients, clients_per_round, sampling)
    took = jnp.where(joined, durations[jnp.minimum(ids, num_clients - 1)], 0.0)
    return server_state, ids, joined, jnp.max(took)


def resolve_chunk_size(chunk_size: int, clients_per_round: int, backend: str) -> int:
    """Clients per vmapped chunk; ``0`` picks per platform.

    On CPU, batched matmuls with per-client weights are slower than clients in sequence, so the
    automatic choice is 1 there; on accelerators it is as many clients as fit a default budget.
    """
    if chunk_size > 0:
        return min(chunk_size, clients_per_round)
    return 1 if backend == "cpu" else min(clients_per_round, 128)


class _Layout(NamedTuple):
    """Where a round's sampling slots run: ``devices`` each stream ``num_chunks`` chunks of
    ``chunk_size`` slots; the ``padded - slots`` slots past the sampled ones are padding."""

    slots: int
    devices: int
    num_chunks: int  # per device
    chunk_size: int

    @property
    def per_device(self) -> int:
        return self.num_chunks * self.chunk_size

    @property
    def padded(self) -> int:
        return self.devices * self.per_device


def _layout(num_clients, clients_per_round, chunk_size, sampling, mesh) -> _Layout:
    slots = (
        clients_per_round if sampling == "fixed" else poisson_slots(num_clients, clients_per_round)
    )
    devices = 1 if mesh is None else mesh.size
    num_chunks = math.ceil(slots / (devices * chunk_size))
    return _Layout(slots, devices, num_chunks, chunk_size)


def _chunk_runner(algorithm, faults, *, num_clients, chunk_size, local_epochs, batch_size):
    """Returns ``run_chunk(server_state, federation, keys, states, ids, real)``: the clients of one
    chunk (``ids``, ``[chunk_size]``) -> ``(ClientResult, aggregated, num_examples, dropped)``."""

    def run_chunk(server_state, federation, keys, states, ids, real):
        client_key, straggler_key = keys
        dataset = Dataset(federation.x, federation.y)

        def one_client(states, client_id, is_real):
            row = jnp.minimum(client_id, num_clients - 1)
            own_key = jax.random.fold_in(client_key, row)
            task = client_task(federation, row, own_key, epochs=local_epochs, batch_size=batch_size)
            mask, num_examples = task.batch_mask, task.num_examples
            dropped = jnp.bool_(False)
            if faults.active:
                straggles = faults_lib.is_straggler(
                    straggler_key, row, num_clients, faults.straggler_fraction
                )
                mask = jnp.where(
                    straggles, faults_lib.truncate_work(mask, faults.straggler_work), mask
                )
                dropped = faults_lib.drops_out(jax.random.fold_in(own_key, 1), faults.dropout_prob)
            task = task._replace(batch_mask=mask)
            state = jax.tree.map(lambda s: s[row], states)
            update = lambda: algorithm.client_update(server_state, state, task, dataset)
            if chunk_size == 1:  # an empty slot skips the work (under vmap both branches would run)
                empty = lambda: jax.tree.map(
                    lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(update)
                )
                result = jax.lax.cond(is_real, update, empty)
            else:
                result = update()
            if faults.attacks:
                attacked = faults_lib.attack(
                    faults, result.contribution, row, jax.random.fold_in(own_key, 2)
                )
                result = result._replace(contribution=attacked)
            finite = aggregate.all_finite((result.contribution, result.loss, result.client_state))
            ok = is_real & finite & ~dropped
            result = result._replace(
                up_bytes=jnp.where(is_real & ~dropped, result.up_bytes, 0),
                down_bytes=jnp.where(is_real, result.down_bytes, 0),
            )
            return result, ok, jnp.where(is_real, num_examples, 0), is_real & dropped

        if chunk_size == 1:  # no vmap: padded local steps are then really skipped by lax.cond
            return jax.tree.map(lambda leaf: leaf[None], one_client(states, ids[0], real[0]))
        return jax.vmap(one_client, in_axes=(None, 0, 0))(states, ids, real)

    return run_chunk


def _client_streamer(run_chunk, layout: _Layout, num_clients: int, stacked: bool):
    """Returns ``run_clients(server_state, client_states, federation, keys, ids, valid)``: the
    clients in slots ``ids`` (``[per_device]``) on one device -> their streamed total (``stacked``:
    their ``Stacked`` contributions), the client states with theirs written, per-slot metrics and
    whether each was aggregated."""

    def run_clients(server_state, client_states, federation, keys, ids, valid):
        run = lambda states, ids, real: run_chunk(server_state, federation, keys, states, ids, real)

        def chunk_step(carry, chunk):
            total, states = carry
            chunk_ids, chunk_valid = chunk
            result, ok, num_examples, dropped = run(states, chunk_ids, chunk_valid)
            if stacked:
                rows = aggregate.keep_rows(result.contribution, ok)
            else:
                total, rows = aggregate.add_chunk(total, result.contribution, ok), ()
            write_ids = jnp.where(ok, chunk_ids, num_clients)
            states = jax.tree.map(
                lambda s, new: s.at[write_ids].set(new, mode="drop"), states, result.client_state
            )
            metrics = (
                result.loss,
                num_examples,
                result.up_bytes,
                result.down_bytes,
                chunk_valid & ~ok,
                dropped,
                chunk_valid,
            )
            return (total, states), (metrics, ok, rows)

        shape = (layout.num_chunks, layout.chunk_size)
        chunks = (ids.reshape(shape), valid.reshape(shape))
        total = ()
        if not stacked:
            first = jax.eval_shape(run, client_states, chunks[0][0], chunks[1][0])[0]
            total = aggregate.zeros_like_one(first.contribution)
        (total, client_states), (metrics, ok, rows) = jax.lax.scan(
            chunk_step, (total, client_states), chunks
        )
        flat = lambda tree: jax.tree.map(lambda m: m.reshape((-1, *m.shape[2:])), tree)
        if stacked:
            total = Stacked(flat(rows), flat(ok))
        return total, client_states, flat(metrics), flat(ok)

    return run_clients


def _sharded(run_clients, layout: _Layout, num_clients: int, mesh: Mesh, stacked: bool):
    """``run_clients`` with slot ``i`` on device ``i % D``; the states written back in one scatter
    of every device's rows; totals summed over devices (``stacked``: gathered in slot order)."""
    per_device, devices = layout.per_device, layout.devices
    regroup = lambda a, shape: a.reshape(shape + a.shape[1:]).swapaxes(0, 1).reshape(a.shape)
    spread = lambda a: regroup(a, (per_device, devices))  # slot order -> device-major
    unspread = lambda a: regroup(a, (devices, per_device))

    def on_device(server_state, client_states, federation, keys, ids, valid):
        total, states, metrics, ok = run_clients(
            server_state, client_states, federation, keys, ids, valid
        )
        rows = jax.tree.map(lambda s: s[jnp.minimum(ids, num_clients - 1)], states)
        return (total if stacked else jax.lax.psum(total, CLIENT_AXIS)), rows, metrics, ok

    def run_sharded(server_state, client_states, federation, keys, ids, valid):
        replicated, split = PartitionSpec(), PartitionSpec(CLIENT_AXIS)
        total, rows, metrics, ok = jax.shard_map(
            on_device,
            mesh=mesh,
            in_specs=(replicated,) * 4 + (split, split),
            out_specs=(split if stacked else replicated, split, split, split),
            check_vma=False,  # the algorithms' lax.cond branches mix per-device and replicated values
        )(server_state, client_states, federation, keys, spread(ids), spread(valid))
        rows, metrics, ok = jax.tree.map(unspread, (rows, metrics, ok))
        total = jax.tree.map(unspread, total) if stacked else total
        write_ids = jnp.where(ok, ids, num_clients)
        client_states = jax.tree.map(
            lambda s, new: s.at[write_ids].set(new, mode="drop"), client_states, rows
        )
        return total, client_states, metrics, ok

    return run_sharded


def build_round_fn(
    algorithm: FederatedAlgorithm,
    *,
    num_clients: int,
    clients_per_round: int,
    chunk_size: int,
    local_epochs: int,
    batch_size: int,
    faults: faults_lib.Faults = faults_lib.NO_FAULTS,
    sampling: str = "fixed",
    mesh: Mesh | None = None,
):
    """Returns ``round_fn(server_state, client_states, federation, round_index, key)``.

    ``round_fn`` returns ``(server_state, client_states, RoundMetrics)``; jit it once per experiment
    (``round_index`` is an array, so rounds do not retrace). ``client_states`` is the algorithm's
    per-client state stacked ``[C, ...]``; rows of clients not sampled are returned unchanged.
    ``faults`` simulates dropout, stragglers, attacks and latency (``fedsim.engine.faults``);
    ``sampling`` is 'fixed' or 'poisson' (see ``sample_clients``; an algorithm's ``schedule``
    replaces it). With a ``mesh`` (``fedsim.engine.sharding``) slot ``i`` runs on device ``i % D``,
    each device streams its own chunks and the totals meet in a ``psum``.
    """
    layout = _layout(num_clients, clients_per_round, chunk_size, sampling, mesh)
    slots, padding = layout.slots, layout.padded - layout.slots
    run_chunk = _chunk_runner(
        algorithm,
        faults,
        num_clients=num_clients,
        chunk_size=chunk_size,
        local_epochs=local_epochs,
        batch_size=batch_size,
    )
    run = _client_streamer(run_chunk, layout, num_clients, algorithm.stacked)
    if mesh is not None:
        run = _sharded(run, layout, num_clients, mesh, algorithm.stacked)

    def round_fn(server_state, client_states, federation: Federation, round_index, key):
        round_key, sample_key, client_key = round_keys(key, round_index)
        straggler_key = jax.random.split(key)[1]  # fixed for the whole experiment
        durations = faults_lib.job_durations(
            faults, straggler_key, jax.random.fold_in(round_key, 1), num_clients
        )
        server_state, sampled, joined, sim_time = _round_clients(
            algorithm, server_state, durations, sample_key, clients_per_round, sampling
        )
        # Padding slots carry the out-of-range id ``num_clients``: reads clamp, writes drop.
        ids = jnp.concatenate([sampled, jnp.full((padding,), num_clients)])
        valid = jnp.concatenate([joined, jnp.zeros((padding,), bool)])
        total, client_states, metrics, ok = run(
            server_state, client_states, federation, (client_key, straggler_key), ids, valid
        )
        updated = algorithm.server_update(server_state, total)
        anyone = jnp.any(ok)
        server_state = jax.tree.map(
            lambda new, old: jnp.where(anyone, new, old), updated, server_state
        )
        metrics = RoundMetrics(sampled, *(m[:slots] for m in metrics), sim_time)
        return server_state, client_states, metrics

    return round_fn
