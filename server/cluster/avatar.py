"""An avatar replica: one `Runtime` (model worker, sessions, references, aiortc peers) in one
Serve replica, on its own GPU (or CPUs).

The peer connections live here, on this replica's asyncio loop (Serve runs every method of a
replica on one loop), so media flows between the browser and this node directly, and each
answer carries this node's own candidates (`RAIN_PUBLIC_IP` and TURN work per node as on a box).
The runtime is named after the replica, so its session ids (and the recording links it gives)
are the ones clients use across the cluster. The ingress reaches every operation through one
call, `call`, which names the replica it is meant for (`replica=`, see `routing.py`).

Drain before stop: Serve stops a replica (scale-down, redeploy) only once its ongoing requests
have ended, and calls it meanwhile. While a replica holds sessions it keeps one request of its
own ongoing, `hold`: taken out of service, it tells its pages and serves them on until they end
or `RAY_DRAIN_TIMEOUT` passes (`Runtime.drain`), and only then does `hold` return and Serve stop
it. The ingress's routers keep reaching a leaving replica's sessions meanwhile (`routing.py`).
When the whole application goes (no replica left running), nothing is drained.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

from server.api.runtime_api import OPERATIONS as INTERFACE
from server.cluster.known_replicas import running_replicas
from server.cluster.remote import answer, log_to_stderr, result
from server.core.config import Settings
from server.runtime import Runtime
from server.sessions.errors import SessionGone

logger = logging.getLogger(__name__)

# Seconds to fetch a reference image from the library.
REFERENCE_FETCH_TIMEOUT = 30.0
# What `call` runs: the routes' interface, and the piece of a recording the ingress streams.
OPERATIONS = frozenset(INTERFACE) | {"recording_chunk"}
# Seconds between a holding replica's looks at whether it is still in service.
HOLD_POLL_S = 1.0


class AvatarReplica:
    """Serve deployment class: one runtime per replica."""

    async def __init__(self, settings: Settings, library: DeploymentHandle):
        context = serve.get_replica_context()
        self.replica = context.replica_id.unique_id
        self.settings = settings
        self.library = library
        # This deployment, to call `hold` on this very replica.
        self.deployment = serve.get_deployment_handle(context.deployment, context.app_name)
        self._holding: asyncio.Task | None = None
        log_to_stderr(settings.LOG_LEVEL)
        node = ray.get_runtime_context().get_node_id()
        self.runtime = Runtime(
            settings, name=self.replica, node=node, address=ray.util.get_node_ip_address(),
            fetch_reference=self._fetch_reference,
        )
        await self.runtime.start()
        logger.info("avatar replica %s ready on node %s", self.replica, node)

    async def __del__(self) -> None:
        # Serve calls it on a graceful stop (scale-down, redeploy, shutdown), after the drain:
        # close every session left.
        if self._holding is not None:
            self._holding.cancel()
        await self.runtime.stop()

    async def _fetch_reference(self, reference_id: str) -> Any:
        return await result(self.library.image.remote(reference_id), timeout=REFERENCE_FETCH_TIMEOUT)

    async def call(self, operation: str, *args: Any, replica: str | None, **kwargs: Any) -> Any:
        """Run one of the runtime's operations here, if this is the replica the call is meant for
        (`replica=None`: any replica will do); a client's error comes back as `Refused`."""
        if operation not in OPERATIONS:
            raise ValueError(f"no operation {operation!r}")  # a bug of the ingress, not a client's
        return await answer(operation, self._run(operation, replica, args, kwargs))

    async def _run(self, operation: str, replica: str | None, args: tuple, kwargs: dict[str, Any]) -> Any:
        if replica is not None and replica != self.replica:
            # The router sends a call for a replica that is gone to any live one.
            raise SessionGone(replica)
        value = await getattr(self.runtime, operation)(*args, **kwargs)
        if operation == "open_session" and (self._holding is None or self._holding.done()):
            self._holding = asyncio.ensure_future(self._hold_while_serving())
        return value

    async def _hold_while_serving(self) -> None:
        try:
            await self.deployment.hold.remote(replica=self.replica)
        except Exception:  # noqa: BLE001 - the sessions stream on; only the drain is lost
            logger.exception("avatar replica %s: holding for a drain failed", self.replica)

    async def hold(self, *, replica: str) -> None:
        """Ongoing while this replica has sessions (see the module's docstring); drains them
        when the replica is taken out of service while others serve on."""
        if replica != self.replica:
            return  # a router sent it elsewhere: this replica left meanwhile
        context = serve.get_replica_context()
        in_service = False
        while self.runtime.session_count:
            running = running_replicas(context.app_name, context.deployment) or ()
            if self.replica in running:
                in_service = True
            elif in_service:  # taken out of service
                if running:  # others serve on: a scale-down or a redeploy
                    logger.info("avatar replica %s taken out of service: draining", self.replica)
                    await self.runtime.drain(self.settings.RAY_DRAIN_TIMEOUT)
                return  # none left running: the application is going, its sessions with it
            await asyncio.sleep(HOLD_POLL_S)

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve's autoscaler scales on live sessions (`autoscaling.py`), not on requests."""
        return {"sessions": float(self.runtime.session_count)}

