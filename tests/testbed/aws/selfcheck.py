#!/usr/bin/env python3
"""Checks a running test bed's AWS emulator end to end, with boto3 (from the emulator's
venv) as the client, kubectl for real ServiceAccount tokens and `testbed pullcheck` for real
pulls through the registry front:

    VENV_PYTHON tests/testbed/aws/selfcheck.py DIR/testbed.json

(VENV_PYTHON: the interpreter named in BIN/aws-emulator.) Prints one line per check and
"N passed, N failed" last; exits 1 if any failed. It changes the emulator's settings as it
goes and restores them (lifetime, faults, trust) at the end; it leaves calls and tokens.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request

import boto3
import botocore.config
import botocore.exceptions
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

results: list[tuple[str, bool, str]] = []


def check(name):
    def wrap(fn):
        try:
            detail = fn() or ""
            results.append((name, True, detail))
            print(f"ok    {name} {detail}", flush=True)
        except Exception as e:  # noqa: BLE001
            results.append((name, False, str(e)))
            print(f"FAIL  {name}: {e}", flush=True)
            traceback.print_exc(limit=3, file=sys.stdout)
        return fn
    return wrap


def main(manifest_path: str) -> int:
    bed = json.load(open(manifest_path))
    aws = bed["aws"]
    control = aws["control"]
    no_retry = botocore.config.Config(retries={"total_max_attempts": 1})

    def ctl(method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(control + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.load(r)

    def client(service, akid=None, secret=None, token=None, region=None):
        return boto3.client(service, endpoint_url=aws["endpoint"], region_name=region or aws["region"],
                            aws_access_key_id=akid or aws["accessKeyId"],
                            aws_secret_access_key=secret or aws["secretAccessKey"],
                            aws_session_token=token, config=no_retry)

    def code_of(fn):
        try:
            fn()
        except botocore.exceptions.ClientError as e:
            return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
        raise AssertionError("the call succeeded")

    def kubectl(*args, stdin=None):
        return subprocess.run([bed["kubectl"], "--kubeconfig", bed["kubeconfig"], *args],
                              input=stdin, capture_output=True, text=True, check=True).stdout

    def pullcheck(user, password, image=None):
        cfg = {"auths": {aws["ecrRegistry"]: {"username": user, "password": password,
                                              "auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}}
        secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                  "metadata": {"name": "ecr", "namespace": "selfcheck"},
                  "data": {".dockerconfigjson": base64.b64encode(json.dumps(cfg).encode()).decode()}}
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            json.dump(secret, f)
            f.flush()
            p = subprocess.run([bed["testbed"], "pullcheck", "--secret", f.name,
                                "--image", image or aws["ecrImage"], "--cert-dir", bed["registry"]["caDir"],
                                "--map", f"{aws['ecrRegistry']}={aws['front']}"],
                               capture_output=True, text=True)
        out = (p.stdout + p.stderr).strip()
        if password and password in out:
            raise AssertionError("pullcheck printed the password")
        return p.returncode, out

    def ecr_password(c=None):
        d = (c or client("ecr")).get_authorization_token()["authorizationData"][0]
        user, _, pw = base64.b64decode(d["authorizationToken"]).decode().partition(":")
        assert user == "AWS", user
        return pw, d

    ctl("POST", "/reset")
    ctl("DELETE", "/faults")
    ctl("DELETE", "/trust")
    ctl("POST", "/config", {"tokenLifetimeSeconds": None, "credentialLifetimeSeconds": None})

    @check("GetAuthorizationToken mints a unique token each call, expiring in 12h, via the front")
    def _():
        pw1, d1 = ecr_password()
        pw2, d2 = ecr_password()
        assert pw1 != pw2, "same password twice"
        left = d1["expiresAt"].timestamp() - time.time()
        assert 43200 - 10 < left <= 43200 + 1, f"expiresAt is now+{left:.0f}s"
        assert d1["proxyEndpoint"] == f"https://{aws['front']}", d1["proxyEndpoint"]
        d = client("ecr").get_authorization_token(registryIds=["123456789012", "210987654321"])
        assert len(d["authorizationData"]) == 1
        return f"(now+{left:.0f}s, {d1['proxyEndpoint']})"

    @check("a fresh token pulls the ECR-named image through the front")
    def _():
        pw, _ = ecr_password()
        rc, out = pullcheck("AWS", pw)
        assert rc == 0, out
        return f"({out})"

    @check("a garbage token, a wrong user and the registry's own login do not pull")
    def _():
        for user, pw in [("AWS", "garbage"), ("regcred-test", ecr_password()[0]),
                         (bed["registry"]["username"], bed["registry"]["password"])]:
            rc, out = pullcheck(user, pw)
            assert rc == 1 and "unauthorized" in out.lower(), out
        return f"(e.g. {out[-160:]})"

    @check("an expired token does not pull (lifetime 3s, wait 4s)")
    def _():
        ctl("POST", "/config", {"tokenLifetimeSeconds": 3})
        try:
            pw, d = ecr_password()
            left = d["expiresAt"].timestamp() - time.time()
            assert 0 < left <= 3.5, left
            rc, out = pullcheck("AWS", pw)
            assert rc == 0, "fresh: " + out
            time.sleep(4)
            rc, out = pullcheck("AWS", pw)
            assert rc == 1 and "expired" in out, out
        finally:
            ctl("POST", "/config", {"tokenLifetimeSeconds": None})
        return f"({out[-120:]})"

    @check("POST /tokens/expire revokes every issued token")
    def _():
        pw, _ = ecr_password()
        ctl("POST", "/tokens/expire")
        rc, out = pullcheck("AWS", pw)
        assert rc == 1 and "revoked" in out, out

    @check("/tokens lists digests and identities, never a password")
    def _():
        pw, d = ecr_password()
        raw = urllib.request.urlopen(control + "/tokens").read().decode()
        assert pw not in raw and d["authorizationToken"] not in raw
        toks = json.loads(raw)
        import hashlib
        last = toks[-1]
        assert last["sha256"] == hashlib.sha256(pw.encode()).hexdigest()
        assert last["identity"] == aws["identityArn"], last
        return f"({len(toks)} tokens)"

    # --- SigV4 -------------------------------------------------------------------------

    @check("SigV4: wrong secret, unknown key, wrong region, unsigned are refused")
    def _():
        got = [
            code_of(lambda: client("ecr", secret="x" * 40).get_authorization_token()),
            code_of(lambda: client("ecr", akid="AKIAUNKNOWNUNKNOWNXX").get_authorization_token()),
            code_of(lambda: client("ecr", region="us-east-1").get_authorization_token()),
            code_of(lambda: client("sts", secret="x" * 40).get_caller_identity()),
            code_of(lambda: client("sts", akid="AKIAUNKNOWNUNKNOWNXX").get_caller_identity()),
        ]
        want = [("InvalidSignatureException", 400), ("UnrecognizedClientException", 400),
                ("InvalidSignatureException", 400), ("SignatureDoesNotMatch", 403),
                ("InvalidClientTokenId", 403)]
        assert got == want, got
        unsigned = boto3.client("ecr", endpoint_url=aws["endpoint"], region_name=aws["region"],
                                config=botocore.config.Config(signature_version=botocore.UNSIGNED,
                                                              retries={"total_max_attempts": 1}))
        c = code_of(unsigned.get_authorization_token)
        assert c == ("MissingAuthenticationTokenException", 400), c
        me = client("sts").get_caller_identity()
        assert me["Arn"] == aws["identityArn"], me
        return f"({got})"

    # --- STS web identity ----------------------------------------------------------------

    subprocess.run([bed["kubectl"], "--kubeconfig", bed["kubeconfig"], "create", "namespace", "selfcheck"],
                   capture_output=True)
    for sa in ("regcred", "other"):
        subprocess.run([bed["kubectl"], "--kubeconfig", bed["kubeconfig"], "-n", "selfcheck",
                        "create", "serviceaccount", sa], capture_output=True)

    def sa_token(sa="regcred", audience="sts.amazonaws.com", duration="10m"):
        return kubectl("-n", "selfcheck", "create", "token", sa, "--audience", audience,
                       "--duration", duration).strip()

    role = "arn:aws:iam::210987654321:role/regcred-ecr"
    sts_anon = boto3.client("sts", endpoint_url=aws["endpoint"], region_name=aws["region"],
                            config=botocore.config.Config(signature_version=botocore.UNSIGNED,
                                                          retries={"total_max_attempts": 1}))

    def assume(token, r=role):
        return sts_anon.assume_role_with_web_identity(RoleArn=r, RoleSessionName="regcred",
                                                      WebIdentityToken=token)

    creds_box = {}

    @check("AssumeRoleWithWebIdentity accepts a real ServiceAccount token")
    def _():
        r = assume(sa_token())
        c = r["Credentials"]
        creds_box.update(c)
        assert r["AssumedRoleUser"]["Arn"] == "arn:aws:sts::210987654321:assumed-role/regcred-ecr/regcred", r
        assert r.get("SubjectFromWebIdentityToken") == "system:serviceaccount:selfcheck:regcred", r
        me = client("sts", c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]).get_caller_identity()
        assert me["Arn"] == r["AssumedRoleUser"]["Arn"] and me["Account"] == "210987654321", me
        pw, _ = ecr_password(client("ecr", c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]))
        tok = ctl("GET", "/tokens")[-1]
        assert tok["identity"] == me["Arn"], tok
        rc, out = pullcheck("AWS", pw)
        assert rc == 0, out
        return f"({me['Arn']})"

    @check("assumed-role keys without their session token are refused")
    def _():
        c = creds_box
        got = code_of(lambda: client("ecr", c["AccessKeyId"], c["SecretAccessKey"]).get_authorization_token())
        assert got == ("UnrecognizedClientException", 400), got

    @check("tampered, forged, wrong-audience, 'none' and garbage tokens are refused")
    def _():
        good = sa_token()
        h, p, s = good.split(".")
        claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
        claims["sub"] = "system:serviceaccount:kube-system:admin"
        p2 = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        tampered = f"{h}.{p2}.{s}"
        kid = jwt.get_unverified_header(good)["kid"]
        forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = int(time.time())
        forged = jwt.encode({**claims, "iat": now, "nbf": now, "exp": now + 600}, forger,
                            algorithm="RS256", headers={"kid": kid})
        got = {}
        for name, tok in [("tampered", tampered), ("forged", forged),
                          ("wrong audience", sa_token(audience="https://kubernetes.default.svc")),
                          ("garbage", "not-a-jwt"),
                          ("none alg", jwt.encode(claims, None, algorithm="none"))]:
            got[name] = code_of(lambda: assume(tok))
        for name, c in got.items():
            assert c == ("InvalidIdentityToken", 400), (name, c)
        return f"({got['tampered']})"

    @check("tokens signed with the bed's own key: valid ok; expired, wrong issuer, not yet valid refused")
    def _():
        # DIR/pki/sa.key is the key the API server signs ServiceAccount tokens with.
        key = open(bed["caFile"].rsplit("/", 1)[0] + "/sa.key").read()
        good = sa_token()
        kid = jwt.get_unverified_header(good)["kid"]
        claims = jwt.decode(good, options={"verify_signature": False})
        now = int(time.time())

        def signed(**over):
            return jwt.encode({**claims, "iat": now - 60, "nbf": now - 60, "exp": now + 600, **over},
                              key, algorithm="RS256", headers={"kid": kid})
        assume(signed())
        got = {
            "expired": code_of(lambda: assume(signed(iat=now - 7200, nbf=now - 7200, exp=now - 3600))),
            "issuer": code_of(lambda: assume(signed(iss="https://kubernetes.default.svc"))),
            "nbf": code_of(lambda: assume(signed(nbf=now + 3600, iat=now + 3600, exp=now + 7200))),
            "no exp": code_of(lambda: assume(jwt.encode({k: v for k, v in claims.items() if k != "exp"},
                                                        key, algorithm="RS256", headers={"kid": kid}))),
        }
        want = {"expired": ("ExpiredTokenException", 400), "issuer": ("InvalidIdentityToken", 400),
                "nbf": ("InvalidIdentityToken", 400), "no exp": ("InvalidIdentityToken", 400)}
        assert got == want, got

    @check("trust: a registered role admits only its subjects")
    def _():
        ctl("POST", "/trust", {"roleArn": role, "subjects": ["system:serviceaccount:selfcheck:other"]})
        try:
            c = code_of(lambda: assume(sa_token("regcred")))
            assert c == ("AccessDenied", 403), c
            assume(sa_token("other"))
            assume(sa_token("regcred"), "arn:aws:iam::210987654321:role/unregistered")
        finally:
            ctl("DELETE", "/trust")

    @check("AssumeRole (signed) works and is recorded by identity")
    def _():
        r = client("sts").assume_role(RoleArn="arn:aws:iam::333333333333:role/cross", RoleSessionName="x-acct")
        c = r["Credentials"]
        me = client("sts", c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]).get_caller_identity()
        assert me["Arn"] == "arn:aws:sts::333333333333:assumed-role/cross/x-acct", me
        call = ctl("GET", "/calls?operation=AssumeRole")[-1]
        assert call["identity"] == aws["identityArn"] and call["issuedAccessKeyId"] == c["AccessKeyId"], call

    @check("credentialLifetimeSeconds caps STS credentials, which then expire")
    def _():
        ctl("POST", "/config", {"credentialLifetimeSeconds": 2})
        try:
            c = assume(sa_token())["Credentials"]
            left = c["Expiration"].timestamp() - time.time()
            assert left <= 2.5, left
            time.sleep(3)
            got = code_of(lambda: client("ecr", c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])
                          .get_authorization_token())
            assert got == ("ExpiredTokenException", 400), got
            got2 = code_of(lambda: client("sts", c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])
                           .get_caller_identity())
            assert got2 == ("ExpiredToken", 400), got2
        finally:
            ctl("POST", "/config", {"credentialLifetimeSeconds": None})

    # --- faults --------------------------------------------------------------------------

    @check("faults: AccessDenied, Throttling, Unavailable, for N calls or until cleared")
    def _():
        want = {"AccessDenied": ("AccessDeniedException", 400), "Throttling": ("ThrottlingException", 400),
                "Unavailable": ("ServiceUnavailableException", 503)}
        for kind, expected in want.items():
            ctl("POST", "/faults", {"operation": "GetAuthorizationToken", "error": kind, "times": 2})
            for _ in range(2):
                got = code_of(lambda: client("ecr").get_authorization_token())
                assert got == expected, (kind, got)
            ecr_password()
        sts_want = {"AccessDenied": ("AccessDenied", 403), "Throttling": ("Throttling", 400),
                    "Unavailable": ("ServiceUnavailable", 503)}
        for kind, expected in sts_want.items():
            ctl("POST", "/faults", {"operation": "AssumeRoleWithWebIdentity", "error": kind, "times": 1})
            got = code_of(lambda: assume(sa_token()))
            assert got == expected, (kind, got)
        ctl("POST", "/faults", {"operation": "*", "error": "Unavailable", "times": None})
        for _ in range(3):
            assert code_of(lambda: client("sts").get_caller_identity()) == ("ServiceUnavailable", 503)
        ctl("DELETE", "/faults")
        client("sts").get_caller_identity()

    @check("/calls records operation, key and identity of every call")
    def _():
        calls = ctl("GET", "/calls")
        by = {}
        for c in calls:
            k = (c["service"], c["operation"], c["identity"], c["status"])
            by[k] = by.get(k, 0) + 1
        assert any(c["identity"] == aws["identityArn"] and c["accessKeyId"] == aws["accessKeyId"]
                   for c in calls)
        assert any(c["identity"] == "arn:aws:sts::210987654321:assumed-role/regcred-ecr/regcred"
                   and c.get("subject") == "system:serviceaccount:selfcheck:regcred" for c in calls)
        reg = ctl("GET", "/registry")
        assert any(r["result"] == "expired" for r in reg) and any(r["status"] == 200 for r in reg)
        return f"({len(calls)} calls, {len(reg)} registry requests)"

    passed = sum(1 for r in results if r[1])
    failed = len(results) - passed
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
