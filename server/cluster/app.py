"""The Serve application and the command that runs it: `rain-avatar serve --ray [ADDRESS]`.

`build_application(settings)` binds the three deployments; `connect(settings)` joins the
cluster at `RAY_ADDRESS` or starts a local one; `serve_on_ray(settings)` does both, deploys, and
serves until SIGINT/SIGTERM. `application_builder` is the import path a KubeRay `RayService`
names (docs/ray.md), with the settings from its `args` over the `RAIN_*` environment.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import ray
from ray import serve
from ray.exceptions import AuthenticationError
from ray.serve import Application
from ray.serve.config import AutoscalingConfig, AutoscalingPolicy, RequestRouterConfig

from rain_core.config import ConfigError, default_device
from server.cluster.autoscaling import SessionsPolicy
from server.cluster.avatar import AvatarReplica
from server.cluster.ingress import Ingress
from server.cluster.references import ReferenceLibrary
from server.cluster.routing import ReplicaAddressedRouter
from server.core.config import Settings

logger = logging.getLogger(__name__)

APP_NAME = "rain-avatar"
# Calls a replica runs at once: they are short (the media is not a call), so many may wait together.
MAX_ONGOING_CALLS = 64
# Seconds Serve waits for a stopping replica's destructor (it closes every session) before killing
# it, after the replica's drain (`RAY_DRAIN_TIMEOUT`).
GRACEFUL_SHUTDOWN_S = 30.0
# A sliver of the resource Ray gives the head node only: the ingress and the library run there.
# A worker node lost takes its avatar replicas and nothing the API needs (the head itself holds
# Ray's control store; losing it is losing the cluster, unless GCS fault tolerance is set up).
ON_THE_HEAD = {"resources": {"node:__internal_head__": 0.001}}


def avatar_placement(settings: Settings) -> dict[str, Any]:
    """Where avatar replicas may run: Ray's reservation per replica, a custom resource if named,
    and at most `RAY_MAX_REPLICAS_PER_NODE` on a node (Serve places the rest elsewhere, and
    places a dead node's replica on a node with room, or waits for one)."""
    actor_options: dict[str, Any] = {
        "num_cpus": settings.RAY_CPUS_PER_REPLICA, "num_gpus": _gpus_per_replica(settings),
    }
    if settings.RAY_REPLICA_RESOURCE is not None:
        actor_options["resources"] = {settings.RAY_REPLICA_RESOURCE: 1}
    placement: dict[str, Any] = {"ray_actor_options": actor_options}
    if settings.RAY_MAX_REPLICAS_PER_NODE is not None:
        placement["max_replicas_per_node"] = settings.RAY_MAX_REPLICAS_PER_NODE
    return placement


def _gpus_per_replica(settings: Settings) -> float:
    if settings.RAY_GPUS_PER_REPLICA is not None:
        return settings.RAY_GPUS_PER_REPLICA
    device = settings.MODEL.device or str(default_device())
    return 1.0 if device.startswith("cuda") else 0.0


def build_application(settings: Settings) -> Application:
    """The ingress bound to the avatar replicas and the reference library."""
    library = serve.deployment(name="references", num_replicas=1, ray_actor_options={"num_cpus": 0, **ON_THE_HEAD})(
        ReferenceLibrary
    ).bind(settings)
    if settings.RAY_MIN_REPLICAS is not None:
        scaling: dict[str, Any] = {"autoscaling_config": AutoscalingConfig(
            min_replicas=settings.RAY_MIN_REPLICAS,
            max_replicas=settings.RAY_MAX_REPLICAS,
            policy=AutoscalingPolicy(
                policy_function=SessionsPolicy, policy_kwargs={"max_sessions": settings.MAX_SESSIONS}
            ),
            upscale_delay_s=settings.RAY_UPSCALE_DELAY,
            downscale_delay_s=settings.RAY_DOWNSCALE_DELAY,
        )}
    else:
        scaling = {"num_replicas": settings.RAY_REPLICAS}
    avatars = serve.deployment(
        name="avatar",
        **avatar_placement(settings),
        max_ongoing_requests=MAX_ONGOING_CALLS,
        request_router_config=RequestRouterConfig(
            request_router_class=ReplicaAddressedRouter,
            # A leaving replica is reachable as long as its drain may last.
            request_router_kwargs={"leaving_for_s": settings.RAY_DRAIN_TIMEOUT + GRACEFUL_SHUTDOWN_S},
        ),
        graceful_shutdown_timeout_s=settings.RAY_DRAIN_TIMEOUT + GRACEFUL_SHUTDOWN_S,
        **scaling,
    )(AvatarReplica).bind(settings, library)
    return serve.deployment(
        name="ingress", num_replicas=settings.RAY_INGRESS_REPLICAS, ray_actor_options={"num_cpus": 0, **ON_THE_HEAD},
        max_ongoing_requests=MAX_ONGOING_CALLS,
    )(Ingress).bind(settings, avatars, library)


def application_builder(args: dict[str, Any]) -> Application:
    """For `serve run` and KubeRay's `serveConfigV2`: `import_path: server.cluster.app:application_builder`,
    `args` any settings by name (e.g. `{"MAX_SESSIONS": 2}`) over the `RAIN_*` environment."""
    return build_application(Settings(**args))


def _worker_environment() -> dict[str, str]:
    """What a local cluster's workers need to import this very code: from a checkout (run with
    PYTHONPATH, or installed editable), its folder first on their PYTHONPATH; from an installed
    package, nothing (site-packages must not go before the standard library)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        return {}
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)}


class InsecureCluster(ConfigError):
    """Joining a cluster without Ray's token authentication, not allowed by `RAY_INSECURE_CLUSTER`."""


def _token_authentication() -> bool:
    """Does this driver speak to the cluster with Ray's token authentication (RAY_AUTH_MODE=token,
    or a token file Ray found and enabled it for)?"""
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    return is_token_auth_enabled()


def _refused_for_authentication(error: BaseException | None) -> bool:
    """Ray gives up connecting with a `ConnectionError`, caused by a `RuntimeError` whose message
    holds the text of its `AuthenticationError` when the cluster refused the token (Ray 2.60)."""
    while error is not None:
        if isinstance(error, AuthenticationError) or "InvalidAuthToken" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def connect(settings: Settings, **init_options: Any) -> None:
    """Join the cluster at `RAY_ADDRESS`, or start a local one running this code (without Ray's
    dashboard unless asked for). Nodes of a running cluster must have the package installed
    (the Docker image).

    A cluster is joined only with Ray's token authentication (whoever reaches an open cluster's
    ports runs any code on it), unless `RAY_INSECURE_CLUSTER`; a cluster that asks for a token
    this driver lacks is a `ConfigError` saying what to set."""
    if settings.RAY_ADDRESS is not None:
        try:
            ray.init(address=settings.RAY_ADDRESS, **init_options)
        except Exception as exc:
            if not _refused_for_authentication(exc):
                raise
            raise ConfigError(
                f"the Ray cluster at {settings.RAY_ADDRESS} refused this driver ({type(exc).__name__}): it uses "
                "token authentication; set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN to the cluster's token "
                "(`ray get-auth-token` on the head prints it)"
            ) from None
        if not settings.RAY_INSECURE_CLUSTER and not _token_authentication():
            ray.shutdown()
            raise InsecureCluster(
                f"refusing to join the Ray cluster at {settings.RAY_ADDRESS} without token authentication "
                "(anyone who reaches its ports could run code on it): start its nodes and this command with "
                "RAY_AUTH_MODE=token and the same RAY_AUTH_TOKEN (docs/ray.md), or pass --insecure-cluster"
            )
        return
    init_options.setdefault("include_dashboard", False)
    ray.init(runtime_env={"env_vars": _worker_environment()}, **init_options)


def deploy(settings: Settings) -> None:
    """Start Serve's HTTP proxy on HOST:PORT and deploy the application (returns once it runs)."""
    serve.start(http_options={"host": settings.HOST, "port": settings.PORT})
    serve.run(build_application(settings), name=APP_NAME, route_prefix="/")
    logger.info("rain-avatar on Ray Serve: http://%s:%d/", settings.HOST, settings.PORT)


def serve_on_ray(settings: Settings) -> int:
    """Deploy on Ray and serve until SIGINT/SIGTERM; then remove the application (every session
    closed) and leave the cluster (a local one stops). Returns the exit status, 0."""
    stop, deployed = threading.Event(), threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()
        if not deployed.is_set():
            raise KeyboardInterrupt  # out of a deployment that waits (e.g. for GPUs it cannot get)

    connect(settings)
    # After `ray.init`, which installs handlers of its own (its SIGTERM handler aborts the process).
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            deploy(settings)
            deployed.set()
        except KeyboardInterrupt:
            logger.info("stopped before the application was running")
        while not stop.wait(1.0):  # a timed wait: signal handlers run between waits
            pass
        logger.info("shutting down: removing the application (every session closes)")
        serve.delete(APP_NAME)
        if settings.RAY_ADDRESS is None:
            serve.shutdown()
    finally:
        ray.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
