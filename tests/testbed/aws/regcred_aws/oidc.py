"""Verifies ServiceAccount tokens against the Kubernetes API server's published keys, the way
STS verifies web identity tokens against an OIDC provider's JWKS."""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
import urllib.request

import jwt

log = logging.getLogger("regcred-aws.oidc")

ALGORITHMS = ("RS256", "ES256")
REFRESH_MIN_INTERVAL = 1.0  # seconds between JWKS refetches for an unknown key id


class TokenRejected(Exception):
    """code is the STS error code: InvalidIdentityToken, ExpiredTokenException or
    IDPCommunicationError."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class Verifier:
    def __init__(self, issuer: str, audience: str, ca_file: str, cert_file: str | None,
                 key_file: str | None):
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.ctx = ssl.create_default_context(cafile=ca_file)
        if cert_file:
            # Anonymous users may not read the discovery document or the keys.
            self.ctx.load_cert_chain(cert_file, key_file)
        self.lock = threading.Lock()
        self.keys: dict[str, jwt.PyJWK] = {}
        self.fetched_at = 0.0

    def _get(self, url: str) -> dict:
        with urllib.request.urlopen(url, context=self.ctx, timeout=5) as resp:
            return json.load(resp)

    def refresh(self) -> None:
        """Fetches the discovery document and the JWKS it names."""
        discovery = self._get(self.issuer + "/.well-known/openid-configuration")
        if discovery.get("issuer", "").rstrip("/") != self.issuer:
            raise RuntimeError(f"the discovery document names issuer {discovery.get('issuer')!r}, "
                               f"not {self.issuer!r}")
        jwks = self._get(discovery.get("jwks_uri") or self.issuer + "/openid/v1/jwks")
        keys = {}
        for k in jwks.get("keys", []):
            try:
                keys[k.get("kid", "")] = jwt.PyJWK(k)
            except jwt.PyJWKError as e:
                log.warning("ignoring a JWKS key (kid %r): %s", k.get("kid"), e)
        with self.lock:
            self.keys = keys
            self.fetched_at = time.monotonic()
        log.info("fetched %d signing key(s) from %s", len(keys), self.issuer)

    def _key(self, kid: str) -> jwt.PyJWK | None:
        with self.lock:
            key = self.keys.get(kid)
            stale = time.monotonic() - self.fetched_at > REFRESH_MIN_INTERVAL
        if key is None and stale:
            try:
                self.refresh()
            except Exception as e:  # noqa: BLE001 - reported to the caller as STS does
                raise TokenRejected("IDPCommunicationError",
                                    f"Couldn't retrieve verification key from your identity provider: {e}")
            with self.lock:
                key = self.keys.get(kid)
        return key

    def verify(self, token: str) -> dict:
        """Returns the token's claims, or raises TokenRejected."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected("InvalidIdentityToken", "The web identity token is not a valid JWT")
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise TokenRejected("InvalidIdentityToken", f"Unsupported token signing algorithm {alg!r}")
        key = self._key(header.get("kid", ""))
        if key is None:
            raise TokenRejected("InvalidIdentityToken",
                                "Couldn't retrieve verification key from your identity provider, please "
                                "reference AssumeRoleWithWebIdentity documentation for requirements")
        try:
            claims = jwt.decode(token, key.key, algorithms=[alg], audience=self.audience,
                                issuer=self.issuer,
                                options={"require": ["exp", "iat", "iss", "aud", "sub"]})
        except jwt.ExpiredSignatureError:
            exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
            raise TokenRejected("ExpiredTokenException",
                                f"Token expired: current date/time {int(time.time())} must be before "
                                f"the expiration date/time {exp}")
        except jwt.InvalidAudienceError:
            raise TokenRejected("InvalidIdentityToken", "Incorrect token audience")
        except jwt.InvalidIssuerError:
            raise TokenRejected("InvalidIdentityToken",
                                f"No OpenIDConnect provider found in your account for the token's issuer "
                                f"(only {self.issuer} is trusted)")
        except jwt.ImmatureSignatureError:
            raise TokenRejected("InvalidIdentityToken", "Token is not valid yet (nbf or iat in the future)")
        except jwt.InvalidSignatureError:
            raise TokenRejected("InvalidIdentityToken", "Token signature verification failed")
        except jwt.MissingRequiredClaimError as e:
            raise TokenRejected("InvalidIdentityToken", f"Token lacks a required claim: {e.claim}")
        except jwt.PyJWTError as e:
            raise TokenRejected("InvalidIdentityToken", f"The web identity token is invalid: {e}")
        return claims
