"""The registry auth front: what ECR's proxyEndpoint is to a real ECR registry. An HTTPS
reverse proxy that admits Basic auth with user AWS and a password the emulator issued and
that has not expired (checked on every request), and forwards to the test bed's registry
with the registry's own htpasswd credentials."""

from __future__ import annotations

import base64
import binascii
import http.client
import http.server
import logging
import socket
import ssl
import threading
from urllib.parse import urlsplit

from .state import State, now, rfc3339

log = logging.getLogger("regcred-aws.front")

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailers", "transfer-encoding", "upgrade", "host", "authorization", "content-length"}
CHUNK = 64 * 1024


class Front:
    def __init__(self, state: State, listen: tuple[str, int], cert_file: str, key_file: str,
                 upstream: str, upstream_ca: str, upstream_user: str, upstream_password: str):
        self.state = state
        self.upstream = upstream  # host:port
        self.upstream_ctx = ssl.create_default_context(cafile=upstream_ca)
        self.upstream_auth = "Basic " + base64.b64encode(
            f"{upstream_user}:{upstream_password}".encode()).decode()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert_file, key_file)
        front = self

        class Handler(_Handler):
            pass

        Handler.front = front
        self.server = _Server(listen, Handler)
        self.server.ssl_ctx = ctx
        self.thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> None:
        self.thread = threading.Thread(target=self.server.serve_forever, name="front", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def check(self, header: str | None) -> tuple[bool, str, str | None]:
        """Returns (admitted, reason, token sha256)."""
        if not header:
            return False, "no credentials", None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False, f"{scheme} authentication is not supported", None
        try:
            user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False, "malformed Basic credentials", None
        if not sep:
            return False, "malformed Basic credentials", None
        if user != "AWS":
            return False, "user is not AWS", None
        verdict, token = self.state.check_password(password)
        return verdict == "ok", verdict if verdict != "ok" else "ok", token.sha256 if token else None


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    ssl_ctx: ssl.SSLContext

    def finish_request(self, request, client_address):
        # The TLS handshake runs here, in the connection's own thread, so that a slow or
        # broken client cannot stall the accept loop.
        request.settimeout(30)
        try:
            tls = self.ssl_ctx.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as e:
            log.debug("TLS handshake with %s failed: %s", client_address, e)
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        # TLS handshakes aborted by readiness probes and the like are not worth a traceback.
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    front: Front
    server_version = "regcred-ecr-front"
    sys_version = ""

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def _proxy(self):
        f = self.front
        admitted, reason, digest = f.check(self.headers.get("Authorization"))
        rec = {"time": rfc3339(now()), "method": self.command, "path": self.path.split("?", 1)[0],
               "result": reason, "tokenSha256": digest}
        body = self._read_body()
        if not admitted:
            rec["status"] = 401
            f.state.record_registry(rec)
            if self.headers.get("Authorization"):
                log.info("registry %s %s refused: %s", self.command, rec["path"], reason)
            msg = (b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required (regcred test '
                   b'bed ECR front: ' + reason.encode() + b')","detail":null}]}\n')
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="ecr"')
            self.send_header("Docker-Distribution-API-Version", "registry/2.0")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(msg)
            return

        conn = http.client.HTTPSConnection(f.upstream, context=f.upstream_ctx, timeout=30)
        try:
            # Header by header: a client sends several Accept headers, and all must reach
            # the registry, or it refuses to serve the manifest types left out.
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", f.upstream)
            conn.putheader("Authorization", f.upstream_auth)
            for k, v in self.headers.items():
                if k.lower() not in HOP_BY_HOP:
                    conn.putheader(k, v)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            rec["status"] = resp.status
            f.state.record_registry(rec)
            self.send_response(resp.status, resp.reason)
            length = resp.getheader("Content-Length")
            for k, v in resp.getheaders():
                lk = k.lower()
                if lk in HOP_BY_HOP:
                    continue
                if lk == "location":
                    v = self._rewrite_location(v)
                if lk == "www-authenticate":
                    v = 'Basic realm="ecr"'
                self.send_header(k, v)
            if self.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200:
                self.send_header("Content-Length", length or "0")
                self.end_headers()
                return
            if length is not None:
                self.send_header("Content-Length", length)
                self.end_headers()
                while chunk := resp.read(CHUNK):
                    self.wfile.write(chunk)
            else:
                data = resp.read()
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
        except (OSError, http.client.HTTPException) as e:
            log.warning("registry %s %s: upstream error: %s", self.command, rec["path"], e)
            if "status" not in rec:
                rec["status"] = 502
                rec["result"] = f"upstream error: {e}"
                f.state.record_registry(rec)
                msg = b'{"errors":[{"code":"UNAVAILABLE","message":"upstream registry error"}]}\n'
                self.send_response(502)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(msg)))
                self.end_headers()
                self.wfile.write(msg)
            else:
                self.close_connection = True
        finally:
            conn.close()

    def _read_body(self) -> bytes | None:
        length = self.headers.get("Content-Length")
        if length:
            return self.rfile.read(int(length))
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        return None

    def _rewrite_location(self, value: str) -> str:
        parts = urlsplit(value)
        if parts.netloc == self.front.upstream:
            return parts._replace(netloc=self.front.address).geturl()
        return value

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (ConnectionError, socket.timeout, ssl.SSLError):
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _proxy
