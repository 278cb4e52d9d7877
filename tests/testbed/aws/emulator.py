#!/usr/bin/env python3
"""A strict AWS emulator (ECR + STS) for regcred's test bed.

    emulator.py --config FILE [--ready-file FILE]
    emulator.py --dir DIR            (same as --config DIR/aws-emulator.json)

Runs moto's server app in-process behind a layer that makes ECR and STS strict (see
tests/testbed/README.md), a registry auth front (HTTPS) and a control endpoint (HTTP, JSON).
Once everything listens it prints one JSON line on stdout, and writes it to --ready-file:
{"endpoint": "http://127.0.0.1:P", "control": "http://127.0.0.1:Q", "front": "127.0.0.1:R"}.
Logs go to stderr and never contain a secret. Exits 0 on SIGTERM or SIGINT.

The config file (JSON; `testbed up` writes it):
  listen (default 127.0.0.1), port, controlPort, frontPort (0 or absent: any free port),
  region (eu-west-1), accountId (123456789012), audience (sts.amazonaws.com),
  tokenLifetimeSeconds (43200), issuer, caFile, clientCert, clientKey (to read the issuer's
  keys), tlsCert, tlsKey (the front's), registry {host, username, password, caFile},
  identities [{accessKeyId, secretAccessKey, arn}].
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

log = logging.getLogger("regcred-aws")


def main() -> int:
    began = time.monotonic()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", help="JSON config file")
    ap.add_argument("--dir", help="test bed directory: use DIR/aws-emulator.json as --config")
    ap.add_argument("--ready-file", help="also write the ready line to this file (atomically)")
    args = ap.parse_args()
    if not args.config and not args.dir:
        ap.error("--config or --dir is required")
    config_path = args.config or os.path.join(args.dir, "aws-emulator.json")

    # Every thread inherits this mask, so the signals wait for the main thread's sigwait.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # Whatever moto prints must not reach stdout, which carries only the ready line.
    ready_out = sys.stdout
    sys.stdout = sys.stderr

    with open(config_path) as f:
        cfg = json.load(f)

    from regcred_aws.control import Control
    from regcred_aws.front import Front
    from regcred_aws.gateway import Gateway
    from regcred_aws.oidc import Verifier
    from regcred_aws.state import DEFAULT_TOKEN_LIFETIME, Identity, State

    # moto's server app; importing it takes most of the start-up time.
    from moto.moto_server.werkzeug_app import (DomainDispatcherApplication, MotoRequestHandler,
                                               create_backend_app)
    from werkzeug.serving import make_server

    listen = cfg.get("listen", "127.0.0.1")
    state = State(region=cfg.get("region", "eu-west-1"),
                  account_id=cfg.get("accountId", "123456789012"),
                  audience=cfg.get("audience", "sts.amazonaws.com"),
                  token_lifetime=int(cfg.get("tokenLifetimeSeconds", DEFAULT_TOKEN_LIFETIME)))
    for i in cfg.get("identities", []):
        arn = i["arn"]
        parts = arn.split(":")
        state.add_identity(Identity(i["accessKeyId"], i["secretAccessKey"], arn,
                                    parts[4] if len(parts) > 5 and parts[4] else state.account_id))

    verifier = Verifier(cfg["issuer"], state.audience, cfg["caFile"], cfg.get("clientCert"),
                        cfg.get("clientKey"))
    reg = cfg["registry"]
    front = Front(state, (listen, int(cfg.get("frontPort", 0))), cfg["tlsCert"], cfg["tlsKey"],
                  reg["host"], reg.get("caFile", cfg["caFile"]), reg["username"], reg["password"])
    control = Control(state, (listen, int(cfg.get("controlPort", 0))))

    class QuietHandler(MotoRequestHandler):
        def log_request(self, code="-", size="-"):
            pass

    gateway = Gateway(DomainDispatcherApplication(create_backend_app), state, verifier, front.address)
    api = make_server(listen, int(cfg.get("port", 0)), gateway, threaded=True,
                      request_handler=QuietHandler)
    api.daemon_threads = True

    stop = threading.Event()

    threading.Thread(target=api.serve_forever, name="api", daemon=True).start()
    front.start()
    control.start()

    def fetch_keys():
        # The API server may still be starting: keep trying for a while. Verification
        # fetches the keys again by itself when it meets an unknown key id.
        deadline = time.monotonic() + 120
        while not stop.is_set():
            try:
                verifier.refresh()
                return
            except Exception as e:  # noqa: BLE001
                if time.monotonic() > deadline:
                    log.warning("could not fetch the issuer's keys yet (%s); will retry on demand", e)
                    return
            stop.wait(0.5)

    threading.Thread(target=fetch_keys, name="jwks", daemon=True).start()

    host, port = api.server_address[:2]
    ready = {"endpoint": f"http://{host}:{port}", "control": f"http://{control.address}",
             "front": front.address}
    line = json.dumps(ready)
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(line + "\n")
        os.rename(tmp, args.ready_file)
    ready_out.write(line + "\n")
    ready_out.flush()
    log.info("ready in %.2fs: AWS API %s (region %s), registry front https://%s -> %s, control %s",
             time.monotonic() - began, ready["endpoint"], state.region, front.address, reg["host"],
             ready["control"])

    sig = signal.sigwait({signal.SIGTERM, signal.SIGINT})
    stop.set()
    # Nothing is kept across runs: the servers' threads are daemons and end with the process.
    log.info("stopping on %s", signal.Signals(sig).name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
