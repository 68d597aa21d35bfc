"""Does a session outlive its TURN credential? The relay-only setup of tests/server/test_turn_relay.py
(server and client in network namespaces with no route between them, Debian's coturn between
them) with credentials valid `--ttl` seconds, and a session held `--seconds` after its first frames:
past the credential's expiry, and past aioice's refresh of the allocation (at 5/6 of its 600 s
lifetime) and of its channel bindings. A check, not a test: it takes minutes of wall time.

    sudo .venv/bin/python scripts/turn_expiry_check.py --ttl 60 --seconds 660

Prints the client's report (frames of the last 30 s, longest stall) and coturn's refreshes, and
exits 1 if the avatar stopped. Needs root, network namespaces and coturn's `turnserver`.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import secrets
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import stop_live_server  # noqa: E402
from tests.server.test_turn_relay import (  # noqa: E402
    relay_server,
    run_client,
    set_up_network,
    start_coturn,
    start_signalling,
    stop,
    tear_down_network,
)

logger = logging.getLogger("turn_expiry_check")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ttl", type=int, default=60, help="RAIN_TURN_TTL, seconds (60 or more)")
    parser.add_argument("--seconds", type=float, default=660, help="how long to hold the session")
    args = parser.parse_args()
    if not 60 <= args.ttl <= 86400:
        parser.error(f"--ttl must be 60 to 86400 seconds (RAIN_TURN_TTL's range), got {args.ttl}")
    if not 0 < args.seconds <= 86400:
        parser.error(f"--seconds must be above 0 and at most a day, got {args.seconds:g}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    directory = Path(tempfile.mkdtemp(prefix="turn-expiry-"))
    secret = secrets.token_hex(32)
    set_up_network()
    try:
        coturn = start_coturn(secret, directory)
        server = relay_server(directory, secret, ttl=args.ttl)
        forwarder, uds = start_signalling(directory)
        logger.info("holding a relayed session for %g s, credentials valid %d s", args.seconds, args.ttl)
        try:
            client = run_client(uds, "--frames", "15", "--timeout", "120", "--hold", str(args.seconds),
                                timeout=args.seconds + 300)
        finally:
            forwarder.shutdown()
            forwarder.server_close()
            stop_live_server(server)
            stop(coturn)
    finally:
        tear_down_network()
    if client.returncode != 0:
        logger.error("the client failed:\n%s", client.stderr[-4000:])
        return 1
    report = json.loads(client.stdout.strip().splitlines()[-1])
    log = (directory / "turn.log").read_text(errors="replace")
    refreshes = len(re.findall(r"REFRESH processed, success", log))
    refused = len(re.findall(r"REFRESH processed, error", log)) + len(re.findall(r"CHANNEL_BIND processed, error", log))
    summary = {**report, "ttl_s": args.ttl, "coturn_refreshes_ok": refreshes, "coturn_refusals": refused}
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0 if report["frames_last_30s"] > 0 and report["state"] == "connected" else 1


if __name__ == "__main__":
    sys.exit(main())
