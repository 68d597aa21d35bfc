"""`serve`: the live WebRTC server, its settings these options over the RAIN_* environment."""

from __future__ import annotations

import argparse
import logging

from cli.options import add_fast_path_options, add_model_options, given_model_options, positive_int


def add_serve(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="run the live WebRTC server (webcam page, OBS view)")
    serve.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=positive_int, default=None, help="port (default 8000)")
    serve.add_argument("--max-sessions", type=positive_int, default=None,
                       help="live sessions at most (default 4; with --ray: per avatar replica)")
    serve.add_argument(
        "--ray", nargs="?", const="", default=None, metavar="ADDRESS",
        help="serve on a Ray Serve cluster: the one at ADDRESS (e.g. auto, HOST:6379, ray://HOST:10001; "
             "or RAIN_RAY_ADDRESS), else a local one started here; replicas: the RAIN_RAY_* settings",
    )
    serve.add_argument(
        "--insecure-cluster", action="store_true", default=None,
        help="with --ray ADDRESS: join a cluster that runs without Ray's token authentication "
             "(RAIN_RAY_INSECURE_CLUSTER; refused otherwise)",
    )
    add_model_options(serve, default_profile=None)
    add_fast_path_options(serve)
    serve.set_defaults(run=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the live WebRTC server (settings: these options over the RAIN_* environment)."""
    from pydantic import ValidationError

    from rain_core.config import ConfigError
    from rain_core.validation import describe_validation_error
    from rain_core.weights.profiles import resolve_profile
    from server.core.config import Settings
    from server.main import serve

    options = {
        "HOST": args.host,
        "PORT": args.port,
        "MAX_SESSIONS": args.max_sessions,
        # Only what the command line gives: the rest of MODEL comes from the RAIN_* variables.
        "MODEL": given_model_options(args) or None,
        "LOG_LEVEL": "DEBUG" if args.verbose else None,
        "RAY": True if args.ray is not None else None,
        "RAY_ADDRESS": args.ray or None,
        "RAY_INSECURE_CLUSTER": args.insecure_cluster,
    }
    try:
        settings = Settings(**{key: value for key, value in options.items() if value is not None})
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, show_input=False)) from None
    if not settings.MODEL.random_weights:
        # Which profile, with every missing part named, before uvicorn starts.
        profile, weights = resolve_profile(settings.MODEL.profile, settings.MODEL.weights)
        model = settings.MODEL.model_copy(update={"profile": profile, "weights": weights})
        settings = settings.model_copy(update={"MODEL": model})
    logging.getLogger("server").setLevel(settings.LOG_LEVEL)
    if settings.RAY:
        try:  # only this path needs Ray
            from server.cluster.app import serve_on_ray
        except ImportError as exc:
            raise ConfigError(f"--ray needs Ray Serve ({exc}): pip install 'rain-avatar[ray]'") from None
        return serve_on_ray(settings)
    return serve(settings)
