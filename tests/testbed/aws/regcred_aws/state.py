"""Everything the emulator remembers, behind one lock: configuration, identities, issued
ECR tokens (as SHA-256 digests only), recorded calls, faults and role trust."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import threading
from dataclasses import dataclass, field

DEFAULT_TOKEN_LIFETIME = 43200  # what real ECR gives: 12 hours
FAULT_KINDS = ("AccessDenied", "Throttling", "Unavailable")
MAX_RECORDS = 10000  # calls and registry requests kept; the oldest are dropped beyond that


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sha256_hex(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


@dataclass
class Identity:
    """Credentials the emulator accepts in SigV4 signatures, and whom they stand for."""

    access_key_id: str
    secret_access_key: str
    arn: str
    account_id: str
    session_token: str | None = None  # temporary credentials only
    expiration: dt.datetime | None = None
    role_arn: str | None = None
    subject: str | None = None  # `sub` of the web identity token, if any
    source: str = "static"  # static | AssumeRoleWithWebIdentity | AssumeRole

    def public(self) -> dict:
        d = {"accessKeyId": self.access_key_id, "arn": self.arn, "accountId": self.account_id,
             "source": self.source}
        if self.role_arn:
            d["roleArn"] = self.role_arn
        if self.subject:
            d["subject"] = self.subject
        if self.expiration:
            d["expiration"] = rfc3339(self.expiration)
        return d


@dataclass
class IssuedToken:
    sha256: str
    issued_at: dt.datetime
    expires_at: dt.datetime
    identity: str | None
    access_key_id: str | None
    revoked: bool = False

    def public(self) -> dict:
        return {"sha256": self.sha256, "issuedAt": rfc3339(self.issued_at),
                "expiresAt": rfc3339(self.expires_at), "identity": self.identity,
                "accessKeyId": self.access_key_id, "revoked": self.revoked}


@dataclass
class Fault:
    operation: str  # an operation name, or "*" for every ECR and STS operation
    error: str  # one of FAULT_KINDS
    remaining: int | None  # None: until cleared

    def public(self) -> dict:
        return {"operation": self.operation, "error": self.error, "remaining": self.remaining}


@dataclass
class State:
    region: str
    account_id: str
    audience: str
    token_lifetime: int = DEFAULT_TOKEN_LIFETIME
    credential_lifetime: int | None = None  # caps STS credentials' lifetime when set
    verify_signatures: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)
    identities: dict[str, Identity] = field(default_factory=dict)
    tokens: list[IssuedToken] = field(default_factory=list)
    tokens_by_hash: dict[str, IssuedToken] = field(default_factory=dict)
    calls: list[dict] = field(default_factory=list)
    registry_requests: list[dict] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    trust: dict[str, list[str]] = field(default_factory=dict)  # role ARN -> allowed subjects

    # --- configuration -------------------------------------------------------------------

    def config(self) -> dict:
        with self.lock:
            return {"tokenLifetimeSeconds": self.token_lifetime,
                    "credentialLifetimeSeconds": self.credential_lifetime,
                    "verifySignatures": self.verify_signatures,
                    "region": self.region, "accountId": self.account_id,
                    "audience": self.audience}

    def set_config(self, body: dict) -> dict:
        known = {"tokenLifetimeSeconds", "credentialLifetimeSeconds", "verifySignatures"}
        unknown = set(body) - known
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}; known: {sorted(known)}")
        with self.lock:
            if "tokenLifetimeSeconds" in body:
                v = body["tokenLifetimeSeconds"]
                if v is None:
                    v = DEFAULT_TOKEN_LIFETIME
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    raise ValueError("tokenLifetimeSeconds must be a positive integer (or null for the default)")
                self.token_lifetime = v
            if "credentialLifetimeSeconds" in body:
                v = body["credentialLifetimeSeconds"]
                if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                    raise ValueError("credentialLifetimeSeconds must be a positive integer or null")
                self.credential_lifetime = v
            if "verifySignatures" in body:
                if not isinstance(body["verifySignatures"], bool):
                    raise ValueError("verifySignatures must be a boolean")
                self.verify_signatures = body["verifySignatures"]
        return self.config()

    # --- identities ----------------------------------------------------------------------

    def add_identity(self, ident: Identity) -> None:
        with self.lock:
            self.identities[ident.access_key_id] = ident

    def identity(self, access_key_id: str | None) -> Identity | None:
        if not access_key_id:
            return None
        with self.lock:
            return self.identities.get(access_key_id)

    # --- ECR tokens ----------------------------------------------------------------------

    def issue_token(self, password: str, ident: Identity | None, access_key_id: str | None):
        issued = now()
        with self.lock:
            expires = issued + dt.timedelta(seconds=self.token_lifetime)
            t = IssuedToken(sha256_hex(password), issued, expires,
                            ident.arn if ident else None, access_key_id)
            self.tokens.append(t)
            self.tokens_by_hash[t.sha256] = t
        return t

    def check_password(self, password: str) -> tuple[str, IssuedToken | None]:
        """Returns ("ok"|"expired"|"revoked"|"unknown", token)."""
        digest = sha256_hex(password)
        with self.lock:
            # Constant-time comparison is moot for a dict lookup of a hash, but cheap to keep
            # the intent clear: only the digest is ever stored.
            t = self.tokens_by_hash.get(digest)
            if t is None or not hmac.compare_digest(t.sha256, digest):
                return "unknown", None
            if t.revoked:
                return "revoked", t
            if now() >= t.expires_at:
                return "expired", t
            return "ok", t

    def expire_tokens(self) -> int:
        with self.lock:
            n = 0
            for t in self.tokens:
                if not t.revoked:
                    t.revoked = True
                    n += 1
            return n

    def list_tokens(self) -> list[dict]:
        with self.lock:
            return [t.public() for t in self.tokens]

    # --- calls ---------------------------------------------------------------------------

    def record_call(self, rec: dict) -> None:
        with self.lock:
            self.calls.append(rec)
            del self.calls[:-MAX_RECORDS]

    def record_registry(self, rec: dict) -> None:
        with self.lock:
            self.registry_requests.append(rec)
            del self.registry_requests[:-MAX_RECORDS]

    def list_calls(self) -> list[dict]:
        with self.lock:
            return list(self.calls)

    def list_registry(self) -> list[dict]:
        with self.lock:
            return list(self.registry_requests)

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()
            self.registry_requests.clear()

    # --- faults --------------------------------------------------------------------------

    def add_fault(self, body: dict) -> dict:
        op = body.get("operation")
        err = body.get("error")
        times = body.get("times")
        if not isinstance(op, str) or not op:
            raise ValueError('"operation" must be an operation name such as "GetAuthorizationToken", or "*"')
        if err not in FAULT_KINDS:
            raise ValueError(f'"error" must be one of {list(FAULT_KINDS)}')
        if times is not None and (not isinstance(times, int) or isinstance(times, bool) or times < 1):
            raise ValueError('"times" must be a positive integer, or null for "until cleared"')
        unknown = set(body) - {"operation", "error", "times"}
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}")
        f = Fault(op, err, times)
        with self.lock:
            self.faults.append(f)
        return f.public()

    def take_fault(self, operation: str) -> str | None:
        """Consumes one use of the first fault matching operation, and returns its kind."""
        with self.lock:
            for f in self.faults:
                if f.operation in (operation, "*"):
                    if f.remaining is not None:
                        f.remaining -= 1
                        if f.remaining == 0:
                            self.faults.remove(f)
                    return f.error
        return None

    def list_faults(self) -> list[dict]:
        with self.lock:
            return [f.public() for f in self.faults]

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    # --- trust ---------------------------------------------------------------------------

    def set_trust(self, body: dict) -> dict:
        role = body.get("roleArn")
        subjects = body.get("subjects")
        if not isinstance(role, str) or not role.startswith("arn:"):
            raise ValueError('"roleArn" must be a role ARN')
        if not isinstance(subjects, list) or not all(isinstance(s, str) for s in subjects):
            raise ValueError('"subjects" must be a list of strings such as "system:serviceaccount:NS:NAME"')
        with self.lock:
            self.trust[role] = list(subjects)
            return dict(self.trust)

    def trusted(self, role: str, subject: str) -> bool:
        with self.lock:
            allowed = self.trust.get(role)
        return allowed is None or subject in allowed

    def list_trust(self) -> dict:
        with self.lock:
            return dict(self.trust)

    def clear_trust(self) -> None:
        with self.lock:
            self.trust.clear()
