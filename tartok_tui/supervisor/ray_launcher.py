"""Workers on a Ray cluster: one actor per running worker, behind ``WorkerLauncher``.

A start reserves the slot's share of a node (a placement group of one bundle: a GPU
share and cores, or cores), then starts a ``WorkerHost`` actor in it, which starts the
worker subprocess on that node and relays its pipes. When no node has the share free
within ``place_wait_s`` the start raises ``NoResources`` and the supervisor tries again
later (the slot shows "pending"). A worker ends when its subprocess exits, or when its
actor or node dies (then as if killed by SIGKILL; ``node_lost`` says when the node was
lost, which is no fault of the tar it held); either way its actor and reservation are
released, and its next start may land on another node.

Before the first start the launcher writes a token file into the output, which each
host reads back from its node (``output.shared``): a node that sees another disk or store
at the output's path is refused by name. Requests that cannot be delivered after a few
tries make the worker unreachable: it is killed, and its tar is not blamed.

Imported only with ``--ray-address``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from tartok_tui import messages as m
from tartok_tui.output.shared import SharedProof, remove_proof, write_proof
from tartok_tui.storage import Access, Location, RetryPolicy
from tartok_tui.supervisor.memory import TreeMemory
from tartok_tui.supervisor.process import (
    NoResources,
    Warn,
    WorkerProcess,
    WorkerSpec,
    WorkerStartError,
)
from tartok_tui.supervisor.ray_cluster import (
    NodeInfo,
    alive_nodes,
    describe_nodes,
    import_ray,
    node_label,
    node_loss,
)
from tartok_tui.supervisor.ray_host import NodePlace, WorkerHost
from tartok_tui.worker.options import WorkerOptions

PLACE_WAIT_S = 5.0
"""How long a start waits for a node to reserve the worker's share before it says
"no resources" (reserving takes milliseconds when a node has the share free)."""
PULL_WAIT_S = 5.0
"""How long one relay call waits on the node for the worker to say something."""
UNAVAILABLE_RETRY_S = 1.0
"""Pause before asking an unreachable actor again (Ray declares its node dead or not)."""
SEND_TIMEOUT_S = 10.0
"""Longest wait for the worker's host to take one batch of requests (a pipe write on
its node): no answer by then counts as a failed try."""
SEND_RETRY_DELAYS_S = (0.5, 1.0, 2.0)
"""Pauses before sending a batch again after a failed try (the actor unavailable for now,
or no answer). After the last try the worker is unreachable: it is killed (its tar is not
blamed) and its slot restarts it. So a request, the final Stop included, is delivered or
its worker killed within 4 x SEND_TIMEOUT_S + 3.5 s, and a kill takes 2 x KILL_GRACE_S at most."""
KILL_GRACE_S = 10.0
"""After a kill, how long the node may take to report the worker's end before the
actor is killed through Ray, and the same again before the worker is given up as gone."""
MEMORY_TIMEOUT_S = 10.0
NODE_POLL_S = 5.0
"""How often the cluster's nodes are listed (for "node joined / lost" events)."""

Report = Callable[[str, int | None, str], None]
LOST_EXIT = -int(signal.SIGKILL)
"""The exit code of a worker whose actor or node died: its processes were killed with it."""


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


class RayWorkerProcess:
    """A worker subprocess on a cluster node, reached through its host actor."""

    def __init__(
        self,
        launcher: RayLauncher,
        slot: int,
        actor: Any,
        group: Any,
        pid: int,
        node: str,
        device: str | None = None,
        node_id: str = "",
    ) -> None:
        self._launcher = launcher
        self._slot = slot
        self._actor = actor
        self._group = group
        self.pid: int | None = pid
        self.node = node
        self.device = device
        """The GPU Ray gave it on its node ("cuda:K", K as the node numbers them), or "cpu"."""
        self.node_id = node_id
        self.node_lost: str | None = None
        self._outbox: list[bytes] = []
        self._pump: asyncio.Task[None] | None = None
        self._closed = False
        self._rc: int | None = None
        self._gone = asyncio.Event()
        """Set when the worker is given up without word from its node."""
        self._kill_timer: asyncio.TimerHandle | None = None
        self._killing = False
        self._through_ray = False
        """The actor was killed through Ray (its node did not answer the kill)."""
        self._batches = 0
        self.unreachable: str | None = None
        """Why the worker was killed for being out of reach (its requests could not be
        delivered); None otherwise. Not its tar's fault."""

    # -- sending ---------------------------------------------------------------------------

    def send(self, msg: m.Message) -> bool:
        if self._closed or self._rc is not None:
            return False
        self._outbox.append(m.encode(msg))
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._send_all())
        return True

    async def _send_all(self) -> None:
        # One call in flight at a time keeps the requests in order.
        while self._outbox and not self._closed:
            batch = b"".join(self._outbox)
            self._outbox.clear()
            self._batches += 1
            failure = await self._deliver(batch, self._batches)
            if failure is not None:
                self._closed = True
                self._outbox.clear()
                if failure:
                    self._unreachable(failure)

    async def _deliver(self, batch: bytes, seq: int) -> str | None:
        """Send one batch, again after a try that failed for now or got no answer (the
        host writes a batch once, however often it arrives). None: delivered; "": the
        worker takes no more (it is exiting, or its actor died: its end comes through
        ``messages``); else why it cannot be reached."""
        errors = self._launcher.ray.exceptions
        why = ""
        for delay in (*SEND_RETRY_DELAYS_S, None):
            try:
                call = self._actor.send.remote(batch, seq)
                delivered = await asyncio.wait_for(call, SEND_TIMEOUT_S)
                return None if delivered else ""
            except TimeoutError:
                why = f"no answer within {SEND_TIMEOUT_S:g} s"
            except errors.ActorUnavailableError as exc:
                why = _short(exc)
            except errors.RayActorError:
                return ""
            except errors.RayError as exc:
                return f"the host failed ({_short(exc)})"
            if delay is None or self._closed:
                break
            await asyncio.sleep(delay)
        return "" if self._closed else f"{len(SEND_RETRY_DELAYS_S) + 1} tries: {why}"

    def _unreachable(self, why: str) -> None:
        self.unreachable = f"its requests could not be delivered after {why}"
        self._launcher.report(
            "warning", self._slot, f"worker on node {self.node} unreachable: killing it ({why})"
        )
        self.kill()

    # -- receiving -------------------------------------------------------------------------

    async def messages(self, warn: Warn) -> AsyncIterator[m.Message]:
        errors = self._launcher.ray.exceptions
        try:
            while self._rc is None:
                try:
                    lines, rc = await self._pull()
                except errors.ActorUnavailableError:
                    # Unreachable for now: its node may be reconnecting, or dying.
                    await asyncio.sleep(UNAVAILABLE_RETRY_S)
                    continue
                except errors.RayError as exc:
                    await self._ended_by_ray(exc)
                    break
                for line in lines:
                    try:
                        yield m.decode(line)
                    except m.ProtocolError as exc:
                        warn(f"bad line from the worker: {exc}")
                if rc is not None:
                    self._rc = rc
        finally:
            # Ended, or the reader gave up on it: the actor and its share go either way.
            self._release()

    async def _pull(self) -> tuple[list[bytes], int | None]:
        if self._gone.is_set():
            raise self._launcher.ray.exceptions.RayError("given up after a kill")
        pull = asyncio.ensure_future(self._actor.pull.remote(PULL_WAIT_S))
        gone = asyncio.ensure_future(self._gone.wait())
        try:
            await asyncio.wait({pull, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not pull.done():
            pull.cancel()
            raise self._launcher.ray.exceptions.RayError("given up after a kill")
        return pull.result()

    async def _ended_by_ray(self, exc: BaseException) -> None:
        """The worker is gone with its actor: because its node was lost (no fault of the
        tar it held), or not (a crash, or a kill its node did not carry out)."""
        why = await asyncio.to_thread(node_loss, self._launcher.ray, exc, self.node_id)
        if why is not None:
            self.node_lost = why
            self._lost(why)
        elif self._through_ray:
            self._lost("its node did not answer the kill; ended through Ray")
        else:
            self._lost(f"its Ray actor died ({_short(exc)})")

    def _lost(self, why: str) -> None:
        self._rc = LOST_EXIT
        self._launcher.report("warning", self._slot, f"worker on node {self.node} lost: {why}")

    # -- ending ----------------------------------------------------------------------------

    def kill(self) -> None:
        """SIGKILL the worker's process group on its node; if the node does not answer,
        kill the actor through Ray, and in the end give the worker up."""
        if self._rc is not None or self._killing:
            return
        self._killing = True
        with contextlib.suppress(self._launcher.ray.exceptions.RayError):
            self._actor.kill.remote()
        loop = asyncio.get_running_loop()
        self._kill_timer = loop.call_later(KILL_GRACE_S, self._kill_actor, loop)

    def _kill_actor(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._rc is not None:
            return
        self._through_ray = True
        self._launcher.kill_actor(self._actor)
        self._kill_timer = loop.call_later(KILL_GRACE_S, self._gone.set)

    async def wait(self) -> int:
        if self._rc is None:
            async for _ in self.messages(lambda text: None):
                pass
        assert self._rc is not None
        return self._rc

    def _release(self) -> None:
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        self._closed = True
        self._launcher.release(self._slot, self._actor, self._group)

    # -- memory ----------------------------------------------------------------------------

    async def memory(self, pss: bool) -> TreeMemory | None:
        if self._rc is not None:
            return None
        try:
            mem = await asyncio.wait_for(self._actor.memory.remote(pss), MEMORY_TIMEOUT_S)
        except (TimeoutError, self._launcher.ray.exceptions.RayError):
            return None
        return None if mem is None else TreeMemory(rss=mem[0], pss=mem[1])


class RayLauncher:
    """Starts workers as Ray actors on the cluster this process has joined.

    ``model_source``: the --model-dir as given; a Hub repo id is fetched into the cache
    of each node whose path to the supervisor's copy does not exist. ``report``: where
    node and actor events go (``Supervisor.report``; set later with ``bind``).
    """

    def __init__(
        self,
        model_source: str | None = None,
        report: Report | None = None,
        place_wait_s: float = PLACE_WAIT_S,
    ) -> None:
        self.ray = import_ray()
        if not self.ray.is_initialized():
            raise RuntimeError("RayLauncher needs a joined cluster (ray_cluster.connect)")
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self._reserve = placement_group
        self._unreserve = remove_placement_group
        self._in_group = PlacementGroupSchedulingStrategy
        self._host = self.ray.remote(WorkerHost)
        self.model_source = model_source
        self._report = report
        self.place_wait_s = place_wait_s
        self._held: dict[int, tuple[Any, Any]] = {}
        """Slot -> (actor or None, placement group) for everything reserved and not released."""
        self._where: dict[int, str] = {}
        self._nodes: dict[str, NodeInfo] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._proof: tuple[SharedProof, Location, Access] | None = None
        """The token file proving the output shared, once written (see output.shared)."""
        self._proving = asyncio.Lock()

    def bind(self, report: Report) -> None:
        self._report = report

    def report(self, level: str, slot: int | None, message: str) -> None:
        if self._report is not None:
            self._report(level, slot, message)

    def describe(self, spec: WorkerSpec) -> str:
        return self._where.get(spec.slot, "Ray cluster")

    # -- starting --------------------------------------------------------------------------

    async def _shared_proof(self, options: WorkerOptions) -> SharedProof:
        """The run's token file in the output, written before the first worker starts."""
        async with self._proving:
            if self._proof is None:
                access = Access(options=options.storage_options)
                try:
                    proof = await asyncio.to_thread(write_proof, options.output_dir, access)
                except OSError as exc:
                    raise WorkerStartError(
                        f"could not write the shared-output check file into the output: {exc}"
                    ) from exc
                self._proof = (proof, options.output_dir, access)
            return self._proof[0]

    async def start(self, spec: WorkerSpec) -> WorkerProcess:
        self._ensure_watch()
        proof = await self._shared_proof(spec.options)
        resources = {k: v for k, v in spec.resources.items() if v > 0} or {"CPU": 1.0}
        group = self._reserve([resources], strategy="STRICT_PACK")
        self._held[spec.slot] = (None, group)
        actor = None
        try:
            try:
                await asyncio.wait_for(group.ready(), self.place_wait_s)
            except TimeoutError:
                raise NoResources(
                    "no node has " + ", ".join(f"{v:g} {k}" for k, v in resources.items()) + " free"
                ) from None
            actor = self._host.options(
                num_cpus=resources.get("CPU", 0.0),
                num_gpus=resources.get("GPU", 0.0),
                scheduling_strategy=self._in_group(
                    placement_group=group, placement_group_bundle_index=0
                ),
                max_restarts=0,
                max_task_retries=0,
            ).remote(spec.slot)
            self._held[spec.slot] = (actor, group)
            try:
                place: NodePlace = await actor.where.remote()
                info = await actor.start.remote(
                    spec.options.to_json(), spec.env, str(spec.log_path), self.model_source, proof
                )
            except self.ray.exceptions.RayError as exc:
                raise WorkerStartError(f"the worker's Ray actor failed: {_short(exc)}") from exc
            label = node_label(place.hostname, place.node_id)
            if "error" in info:
                raise WorkerStartError(f"cannot run on node {label}: {info['error']}")
        except BaseException:
            # Not placed, failed, or the run is ending: nothing may stay reserved.
            self.release(spec.slot, actor, group)
            raise
        gpus = f"GPU {','.join(info['gpus'])}" if info["gpus"] else "CPU"
        self._where[spec.slot] = f"node {label}, {gpus}, log {info['log']}"
        device = f"cuda:{info['gpus'][0]}" if info["gpus"] else "cpu"
        return RayWorkerProcess(
            self, spec.slot, actor, group, info["pid"], label, device, place.node_id
        )

    # -- releasing -------------------------------------------------------------------------

    def kill_actor(self, actor: Any) -> None:
        with contextlib.suppress(self.ray.exceptions.RayError, ValueError):
            self.ray.kill(actor, no_restart=True)

    def release(self, slot: int, actor: Any, group: Any) -> None:
        """End the actor and free its reservation (its worker has exited, or never ran)."""
        if actor is not None:
            self.kill_actor(actor)
        with contextlib.suppress(self.ray.exceptions.RayError, ValueError):
            self._unreserve(group)
        if self._held.get(slot, (None, None))[1] is group:
            del self._held[slot]

    def close(self) -> None:
        """End every actor and reservation still held (pending ones included), and remove
        the shared-output token file."""
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        for slot, (actor, group) in list(self._held.items()):
            self.release(slot, actor, group)
        if self._proof is not None:
            (proof, output, access), self._proof = self._proof, None
            try:
                # One try: the run has ended, and a leftover token file harms nothing.
                remove_proof(output, replace(access, retry=RetryPolicy(tries=1)), proof)
            except OSError as exc:
                self.report("warning", None, f"could not remove the check file {proof.key}: {exc}")

    # -- watching the nodes ----------------------------------------------------------------

    def _ensure_watch(self) -> None:
        if self._watch is None or self._watch.done():
            self._watch = asyncio.get_running_loop().create_task(self._watch_nodes())

    async def _watch_nodes(self) -> None:
        while True:
            try:
                nodes = await asyncio.to_thread(alive_nodes, self.ray)
            except self.ray.exceptions.RayError as exc:
                self.report("warning", None, f"could not list the Ray cluster's nodes: {exc}")
            else:
                self._note_nodes({n.node_id: n for n in nodes})
            await asyncio.sleep(NODE_POLL_S)

    def _note_nodes(self, now: dict[str, NodeInfo]) -> None:
        before, self._nodes = self._nodes, now
        if before is None:
            self.report("info", None, f"Ray cluster: {describe_nodes(list(now.values()))}")
            return
        for node_id in before.keys() - now.keys():
            self.report("warning", None, f"node {before[node_id].label} lost")
        for node_id in now.keys() - before.keys():
            node = now[node_id]
            self.report(
                "info", None, f"node {node.label} joined ({node.cpus:g} CPUs, {node.gpus:g} GPUs)"
            )
