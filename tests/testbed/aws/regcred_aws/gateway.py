"""A WSGI layer in front of moto's server app that makes ECR and STS strict: SigV4 checked
against known credentials, unique expiring ECR tokens, real web identity verification, role
trust, injected faults, and a record of every call by identity."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import logging
import secrets
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from . import errors, sigv4
from .oidc import TokenRejected, Verifier
from .state import Identity, State, now, rfc3339

log = logging.getLogger("regcred-aws.api")

ECR_TARGET_PREFIX = "AmazonEC2ContainerRegistry_V20150921."
UNSIGNED_STS = {"AssumeRoleWithWebIdentity", "AssumeRoleWithSAML"}
STS_NS = errors.STS_NS

Response = tuple[int, list[tuple[str, str]], bytes]

STATUS_TEXT = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
               500: "Internal Server Error", 503: "Service Unavailable"}


def _read_body(environ: dict) -> bytes:
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    if length:
        return stream.read(int(length))
    if environ.get("wsgi.input_terminated"):
        return stream.read()
    return b""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _xml_find(root: ET.Element, *path: str) -> str | None:
    """Text of the first element whose local names end with path, e.g. ("Credentials", "AccessKeyId")."""
    for el in root.iter():
        if _local(el.tag) != path[0]:
            continue
        cur = el
        for name in path[1:]:
            cur = next((c for c in cur if _local(c.tag) == name), None)
            if cur is None:
                break
        if cur is not None:
            return cur.text
    return None


def _parse_time(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(dt.timezone.utc)


def _stable_id(prefix: str, seed: str) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    digest = hashlib.sha256(seed.encode()).digest()
    return prefix + "".join(alphabet[b % 32] for b in digest[:17])


class Gateway:
    def __init__(self, moto_app, state: State, verifier: Verifier, front: str):
        self.moto = moto_app
        self.state = state
        self.verifier = verifier
        self.front = front  # host:port of the registry auth front

    # --- WSGI ----------------------------------------------------------------------------

    def __call__(self, environ, start_response):
        body = _read_body(environ)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        service, operation, params = self._classify(environ, body)
        if service is None:
            # Neither ECR nor STS (moto's own API, other services): moto as it is.
            return self.moto(environ, start_response)
        status, headers, out = self._handle(environ, body, service, operation, params)
        start_response(f"{status} {STATUS_TEXT.get(status, '')}".rstrip(), headers)
        return [out]

    def _classify(self, environ: dict, body: bytes):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith(ECR_TARGET_PREFIX):
            try:
                params = json.loads(body or b"{}")
            except ValueError:
                params = None
            return "ecr", target[len(ECR_TARGET_PREFIX):], params
        auth = sigv4.access_key_of(environ.get("HTTP_AUTHORIZATION"))
        scope_service = None
        if auth:
            try:
                scope_service = sigv4.parse(environ["HTTP_AUTHORIZATION"]).service
            except sigv4.SignatureError:
                scope_service = None
        form = {}
        ctype = environ.get("CONTENT_TYPE", "")
        if ctype.startswith("application/x-www-form-urlencoded"):
            form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        elif environ.get("QUERY_STRING"):
            form = parse_qs(environ["QUERY_STRING"], keep_blank_values=True)
        action = (form.get("Action") or [None])[0]
        if action and (scope_service == "sts" or (scope_service is None and action in UNSIGNED_STS)
                       or (not auth and action in UNSIGNED_STS | {"AssumeRole", "GetCallerIdentity"})):
            return "sts", action, {k: v[0] for k, v in form.items()}
        return None, None, None

    # --- one ECR or STS call -------------------------------------------------------------

    def _error(self, service: str, kind: str, message: str) -> Response:
        return errors.ecr_error(kind, message) if service == "ecr" else errors.sts_error(kind, message)

    def _handle(self, environ, body, service, operation, params) -> Response:
        header = environ.get("HTTP_AUTHORIZATION")
        akid = sigv4.access_key_of(header)
        ident = self.state.identity(akid)
        rec = {"time": rfc3339(now()), "service": service, "operation": operation,
               "accessKeyId": akid, "identity": ident.arn if ident else None}
        if ident and ident.role_arn:
            rec["roleArn"] = ident.role_arn
        if ident and ident.subject:
            rec["subject"] = ident.subject
        try:
            resp = self._dispatch(environ, body, service, operation, params, header, ident, rec)
        except Exception as e:  # noqa: BLE001 - a bug here must show, not hang the client
            log.exception("%s %s failed", service, operation)
            resp = (errors.ecr_error_raw("ServerException", 500, f"emulator error: {e}") if service == "ecr"
                    else errors.sts_error_raw("InternalFailure", 500, "Receiver", f"emulator error: {e}"))
        status, headers, out = resp
        rec["status"] = status
        rec["error"] = _error_code(service, status, out)
        self.state.record_call(rec)
        log.info("%s %s key=%s identity=%s -> %d%s", service, operation, akid or "-",
                 rec.get("identity") or "-", status, f" {rec['error']}" if rec["error"] else "")
        return resp

    def _dispatch(self, environ, body, service, operation, params, header, ident, rec) -> Response:
        fault = self.state.take_fault(operation)
        if fault:
            rec["injected"] = True
            action = f"{service}:{operation}"
            return self._error(service, fault, errors.fault_message(fault, ident.arn if ident else None, action))

        unsigned_ok = service == "sts" and operation in UNSIGNED_STS
        if not unsigned_ok:
            denied = self._authenticate(environ, body, service, header, ident)
            if denied:
                return denied
        if params is None:
            return errors.ecr_error_raw("SerializationException", 400, "Request body is not valid JSON")

        if service == "ecr" and operation == "GetAuthorizationToken":
            return self._get_authorization_token(params, ident, rec)
        if service == "sts" and operation == "AssumeRoleWithWebIdentity":
            return self._assume_role_with_web_identity(environ, params, rec)
        if service == "sts" and operation == "AssumeRole":
            return self._assume_role(environ, params, ident, rec)
        if service == "sts" and operation == "GetCallerIdentity" and ident:
            return self._get_caller_identity(ident)
        return self._call_moto(environ)

    def _authenticate(self, environ, body, service, header, ident: Identity | None) -> Response | None:
        if not header:
            if service == "ecr":
                return errors.ecr_error("MissingAuthentication", "Missing Authentication Token")
            return errors.sts_error("MissingAuthentication", "Request is missing Authentication Token")
        try:
            auth = sigv4.parse(header)
        except sigv4.SignatureError as e:
            return self._error(service, "IncompleteSignature", e.message)
        if not self.state.verify_signatures:
            return None
        if ident is None:
            return self._error(service, "UnknownKey", "The security token included in the request is invalid.")
        token = environ.get("HTTP_X_AMZ_SECURITY_TOKEN")
        if ident.session_token is not None:
            if token != ident.session_token:
                return self._error(service, "UnknownKey", "The security token included in the request is invalid.")
            if ident.expiration and now() >= ident.expiration:
                return self._error(service, "ExpiredCredentials", "The security token included in the request is expired")
        elif token:
            # A session token with long-term keys: AWS rejects the pair.
            return self._error(service, "UnknownKey", "The security token included in the request is invalid.")
        try:
            sigv4.verify(environ, body, auth, ident.secret_access_key, self.state.region, service, now())
        except sigv4.SignatureError as e:
            kind = "IncompleteSignature" if e.kind == "incomplete" else "BadSignature"
            return self._error(service, kind, e.message)
        return None

    # --- ECR -----------------------------------------------------------------------------

    def _get_authorization_token(self, params: dict, ident: Identity | None, rec: dict) -> Response:
        ids = params.get("registryIds")
        if ids is not None:
            if not isinstance(ids, list) or not (1 <= len(ids) <= 10) or not all(
                    isinstance(i, str) and len(i) == 12 and i.isdigit() for i in ids):
                return errors.ecr_error(
                    "InvalidParameter",
                    "Invalid parameter at 'registryIds' failed to satisfy constraint: 'Member must "
                    "satisfy constraint: [Member must satisfy regular expression pattern: [0-9]{12}]'")
        password = base64.b64encode(secrets.token_bytes(192)).decode()
        token = base64.b64encode(b"AWS:" + password.encode()).decode()
        issued = self.state.issue_token(password, ident, ident.access_key_id if ident else None)
        rec["tokenSha256"] = issued.sha256
        out = json.dumps({"authorizationData": [{
            "authorizationToken": token,
            "expiresAt": round(issued.expires_at.timestamp(), 3),
            "proxyEndpoint": f"https://{self.front}",
        }]}).encode()
        return 200, [("Content-Type", "application/x-amz-json-1.1"),
                     ("x-amzn-RequestId", errors.request_id()),
                     ("Content-Length", str(len(out)))], out

    # --- STS -----------------------------------------------------------------------------

    def _assume_role_with_web_identity(self, environ, params: dict, rec: dict) -> Response:
        role = params.get("RoleArn", "")
        token = params.get("WebIdentityToken", "")
        for name in ("RoleArn", "RoleSessionName", "WebIdentityToken"):
            if not params.get(name):
                return errors.sts_error_raw("ValidationError", 400, "Sender",
                                            f"1 validation error detected: Value null at '{name[0].lower() + name[1:]}' "
                                            "failed to satisfy constraint: Member must not be null")
        rec["roleArn"] = role
        try:
            claims = self.verifier.verify(token)
        except TokenRejected as e:
            status = 400
            return errors.sts_error_raw(e.code, status, "Sender", e.message)
        sub = claims["sub"]
        rec["identity"] = sub
        rec["subject"] = sub
        if not self.state.trusted(role, sub):
            return errors.sts_error_raw("AccessDenied", 403, "Sender",
                                        "Not authorized to perform sts:AssumeRoleWithWebIdentity")
        status, headers, out = self._call_moto(environ)
        if status != 200:
            return status, headers, out
        extra = (f"<SubjectFromWebIdentityToken>{escape(sub)}</SubjectFromWebIdentityToken>"
                 f"<Audience>{escape(self.verifier.audience)}</Audience>"
                 f"<Provider>{escape(self.verifier.issuer)}</Provider>")
        return self._record_credentials(headers, out, "AssumeRoleWithWebIdentity", role, sub, rec, extra)

    def _assume_role(self, environ, params: dict, ident: Identity | None, rec: dict) -> Response:
        role = params.get("RoleArn", "")
        status, headers, out = self._call_moto(environ)
        if status != 200:
            return status, headers, out
        return self._record_credentials(headers, out, "AssumeRole", role,
                                        ident.subject if ident else None, rec, "",
                                        source_arn=ident.arn if ident else None)

    def _record_credentials(self, headers, out: bytes, source: str, role: str, subject: str | None,
                            rec: dict, extra: str, source_arn: str | None = None) -> Response:
        root = ET.fromstring(out)
        akid = _xml_find(root, "Credentials", "AccessKeyId")
        secret = _xml_find(root, "Credentials", "SecretAccessKey")
        session = _xml_find(root, "Credentials", "SessionToken")
        expiration = _parse_time(_xml_find(root, "Credentials", "Expiration"))
        arn = _xml_find(root, "AssumedRoleUser", "Arn")
        text = out.decode()
        cap = self.state.credential_lifetime
        if cap is not None:
            capped = now().replace(microsecond=0) + dt.timedelta(seconds=cap)
            if capped < expiration:
                old = _xml_find(root, "Credentials", "Expiration")
                text = text.replace(f"<Expiration>{old}</Expiration>",
                                    f"<Expiration>{capped.strftime('%Y-%m-%dT%H:%M:%SZ')}</Expiration>", 1)
                expiration = capped
        if extra and "<SubjectFromWebIdentityToken>" not in text:
            text = text.replace("</AssumedRoleUser>", "</AssumedRoleUser>" + extra, 1)
        account = arn.split(":")[4] if arn and arn.count(":") >= 5 else self.state.account_id
        self.state.add_identity(Identity(akid, secret, arn, account, session_token=session,
                                         expiration=expiration, role_arn=role, subject=subject,
                                         source=source))
        rec["issuedAccessKeyId"] = akid
        rec["issuedArn"] = arn
        if source_arn:
            rec["sourceIdentity"] = source_arn
        out = text.encode()
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(out))))
        return 200, headers, out

    def _get_caller_identity(self, ident: Identity) -> Response:
        if ident.session_token:
            session = ident.arn.rsplit("/", 1)[-1]
            user_id = _stable_id("AROA", ident.role_arn or ident.arn) + ":" + session
        else:
            user_id = _stable_id("AIDA", ident.arn)
        rid = errors.request_id()
        out = (f'<GetCallerIdentityResponse xmlns="{STS_NS}">\n  <GetCallerIdentityResult>\n'
               f"    <Arn>{escape(ident.arn)}</Arn>\n    <UserId>{escape(user_id)}</UserId>\n"
               f"    <Account>{ident.account_id}</Account>\n  </GetCallerIdentityResult>\n"
               f"  <ResponseMetadata>\n    <RequestId>{rid}</RequestId>\n  </ResponseMetadata>\n"
               f"</GetCallerIdentityResponse>\n").encode()
        return 200, [("Content-Type", "text/xml"), ("x-amzn-RequestId", rid),
                     ("Content-Length", str(len(out)))], out

    # --- moto ----------------------------------------------------------------------------

    def _call_moto(self, environ) -> Response:
        environ["wsgi.input"].seek(0)
        captured = {}

        def start_response(status, headers, exc_info=None):
            captured["status"] = int(status.split()[0])
            captured["headers"] = list(headers)
            return lambda data: None

        chunks = self.moto(environ, start_response)
        try:
            out = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        return captured["status"], captured["headers"], out


def _error_code(service: str, status: int, out: bytes) -> str | None:
    if status < 400:
        return None
    try:
        if service == "ecr":
            return json.loads(out).get("__type")
        return _xml_find(ET.fromstring(out), "Error", "Code")
    except Exception:  # noqa: BLE001
        return "unparsable error"
