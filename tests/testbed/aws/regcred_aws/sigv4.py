"""AWS Signature Version 4 (header form), checked the way AWS does for ECR and STS."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = dt.timedelta(minutes=15)

_AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<cred>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+)\s*,\s*Signature=(?P<sig>[0-9a-f]{64})\s*$")


@dataclass
class Authorization:
    access_key_id: str
    date: str
    region: str
    service: str
    signed_headers: list[str]
    signature: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


class SignatureError(Exception):
    """kind: "incomplete" (malformed header), "mismatch", "scope" or "expired"."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


def access_key_of(header: str | None) -> str | None:
    """The access key id in an Authorization header, however malformed the rest is."""
    if not header:
        return None
    m = re.search(r"Credential=([^/,\s]+)/", header)
    return m.group(1) if m else None


def parse(header: str) -> Authorization:
    m = _AUTH_RE.match(header.strip())
    if not m:
        raise SignatureError("incomplete", "Authorization header requires 'Credential', "
                             "'SignedHeaders' and 'Signature' parameters in the AWS4-HMAC-SHA256 form.")
    parts = m.group("cred").split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise SignatureError("incomplete", "Credential should be of the form "
                             "AKID/yyyyMMdd/region/service/aws4_request.")
    return Authorization(parts[0], parts[1], parts[2], parts[3],
                         m.group("signed").split(";"), m.group("sig"))


def _uri_encode(s: str, safe: str = "") -> str:
    return quote(s, safe="-_.~" + safe)


def canonical_query(qs: str) -> str:
    pairs = []
    for item in qs.split("&") if qs else []:
        k, _, v = item.partition("=")
        pairs.append((_uri_encode(unquote(k)), _uri_encode(unquote(v))))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def canonical_uri(raw_path: str) -> str:
    # Every service but S3 encodes the already-encoded path once more.
    path = raw_path or "/"
    return _uri_encode(_uri_encode(unquote(path), safe="/"), safe="/")


def header_value(environ: dict, name: str) -> str | None:
    if name == "content-type":
        return environ.get("CONTENT_TYPE")
    if name == "content-length":
        return environ.get("CONTENT_LENGTH")
    return environ.get("HTTP_" + name.upper().replace("-", "_"))


def verify(environ: dict, body: bytes, auth: Authorization, secret: str,
           expected_region: str, expected_service: str, now: dt.datetime) -> None:
    """Raises SignatureError unless the request is signed with secret for this service."""
    if auth.region != expected_region:
        raise SignatureError("scope", f"Credential should be scoped to a valid region, not '{auth.region}'. ")
    if auth.service != expected_service:
        raise SignatureError("scope", f"Credential should be scoped to correct service: '{expected_service}'. ")
    if "host" not in auth.signed_headers:
        raise SignatureError("mismatch", "'Host' must be a 'SignedHeader' in the AWS Authorization.")
    amz_date = environ.get("HTTP_X_AMZ_DATE")
    if not amz_date:
        raise SignatureError("incomplete", "Authorization header requires existence of either "
                             "a 'X-Amz-Date' or a 'Date' header.")
    try:
        when = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise SignatureError("incomplete", f"X-Amz-Date '{amz_date}' is not in the form yyyyMMddTHHmmssZ.")
    if not amz_date.startswith(auth.date):
        raise SignatureError("mismatch", f"Date in Credential scope does not match YYYYMMDD from ISO-8601 "
                             f"version of date from HTTP: '{auth.date}' != '{amz_date[:8]}', from '{amz_date}'.")
    if abs(now - when) > MAX_SKEW:
        fmt = "%Y%m%dT%H%M%SZ"
        raise SignatureError("expired", f"Signature expired: {amz_date} is now earlier than "
                             f"{(now - MAX_SKEW).strftime(fmt)} ({now.strftime(fmt)} - 15 min.)")

    headers = []
    for name in auth.signed_headers:
        value = header_value(environ, name)
        if value is None:
            value = ""
        headers.append(f"{name}:{' '.join(value.split())}\n")
    payload_hash = environ.get("HTTP_X_AMZ_CONTENT_SHA256") or hashlib.sha256(body).hexdigest()
    raw_path = environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ.get("PATH_INFO", "/")
    raw_path = raw_path.split("?", 1)[0]
    canonical = "\n".join([
        environ.get("REQUEST_METHOD", "GET"),
        canonical_uri(raw_path),
        canonical_query(environ.get("QUERY_STRING", "")),
        "".join(headers),
        ";".join(auth.signed_headers),
        payload_hash,
    ])
    string_to_sign = "\n".join([ALGORITHM, amz_date, auth.scope,
                                hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (auth.date, auth.region, auth.service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, auth.signature):
        raise SignatureError("mismatch", "The request signature we calculated does not match the "
                             "signature you provided. Check your AWS Secret Access Key and signing "
                             "method. Consult the service documentation for details.")
