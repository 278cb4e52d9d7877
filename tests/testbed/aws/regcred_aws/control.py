"""The control endpoint: plain HTTP with JSON bodies on loopback, for tests to steer the
emulator and read what it saw. It never returns a password, token or secret key."""

from __future__ import annotations

import http.server
import json
import logging
import threading
from urllib.parse import parse_qs, urlsplit

from .state import Identity, State

log = logging.getLogger("regcred-aws.control")

ROUTES = """GET  /healthz
GET  /config            POST /config {"tokenLifetimeSeconds": N|null, "credentialLifetimeSeconds": N|null, "verifySignatures": bool}
GET  /faults            POST /faults {"operation": "GetAuthorizationToken"|"*"|..., "error": "AccessDenied"|"Throttling"|"Unavailable", "times": N|null}    DELETE /faults
GET  /trust             POST /trust {"roleArn": ARN, "subjects": ["system:serviceaccount:NS:NAME", ...]}    DELETE /trust
GET  /identities        POST /identities {"accessKeyId": ..., "secretAccessKey": ..., "arn": ...}
GET  /calls[?operation=OP&service=ecr|sts]
GET  /tokens            POST /tokens/expire
GET  /registry
POST /reset             (clears /calls and /registry)
"""


class Control:
    def __init__(self, state: State, listen: tuple[str, int]):
        self.state = state

        class Handler(_Handler):
            pass

        Handler.state = state
        self.server = http.server.ThreadingHTTPServer(listen, Handler)
        self.server.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> None:
        self.thread = threading.Thread(target=self.server.serve_forever, name="control", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class BadRequest(Exception):
    pass


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: State
    server_version = "regcred-aws-control"
    sys_version = ""

    def log_message(self, format, *args):  # noqa: A002
        pass

    def _send(self, status: int, payload) -> None:
        body = (json.dumps(payload, indent=1) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self):
        raw = self.raw_body
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError as e:
            raise BadRequest(f"body is not JSON: {e}")
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        return body

    def _route(self):
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        s = self.state
        key = (self.command, path)
        if key == ("GET", "/healthz"):
            return 200, {"ok": True}
        if key == ("GET", "/config"):
            return 200, s.config()
        if key == ("POST", "/config"):
            return 200, s.set_config(self._json())
        if key == ("GET", "/faults"):
            return 200, s.list_faults()
        if key == ("POST", "/faults"):
            s.add_fault(self._json())
            return 200, s.list_faults()
        if key == ("DELETE", "/faults"):
            s.clear_faults()
            return 200, []
        if key == ("GET", "/trust"):
            return 200, s.list_trust()
        if key == ("POST", "/trust"):
            return 200, s.set_trust(self._json())
        if key == ("DELETE", "/trust"):
            s.clear_trust()
            return 200, {}
        if key == ("GET", "/identities"):
            with s.lock:
                return 200, [i.public() for i in s.identities.values()]
        if key == ("POST", "/identities"):
            body = self._json()
            akid, secret, arn = body.get("accessKeyId"), body.get("secretAccessKey"), body.get("arn")
            if not all(isinstance(v, str) and v for v in (akid, secret, arn)):
                raise BadRequest('"accessKeyId", "secretAccessKey" and "arn" are required strings')
            parts = arn.split(":")
            account = parts[4] if len(parts) > 5 and parts[4] else s.account_id
            ident = Identity(akid, secret, arn, account)
            s.add_identity(ident)
            return 200, ident.public()
        if key == ("GET", "/calls"):
            calls = s.list_calls()
            if "operation" in query:
                calls = [c for c in calls if c["operation"] == query["operation"]]
            if "service" in query:
                calls = [c for c in calls if c["service"] == query["service"]]
            return 200, calls
        if key == ("GET", "/tokens"):
            return 200, s.list_tokens()
        if key == ("POST", "/tokens/expire"):
            return 200, {"expired": s.expire_tokens()}
        if key == ("GET", "/registry"):
            return 200, s.list_registry()
        if key == ("POST", "/reset"):
            s.reset()
            return 200, {"ok": True}
        return 404, {"error": f"no route {self.command} {path}", "routes": ROUTES.splitlines()}

    def _handle(self):
        # Read the whole body first, whichever route uses it, so keep-alive stays in step.
        length = int(self.headers.get("Content-Length") or 0)
        self.raw_body = self.rfile.read(length) if length else b""
        try:
            status, payload = self._route()
        except (BadRequest, ValueError) as e:
            status, payload = 400, {"error": str(e)}
        except Exception as e:  # noqa: BLE001
            log.exception("control %s %s", self.command, self.path)
            status, payload = 500, {"error": f"emulator error: {e}"}
        if self.command != "GET":
            log.info("control %s %s -> %d", self.command, self.path, status)
        self._send(status, payload)

    do_GET = do_POST = do_DELETE = do_PUT = _handle
