"""Error responses in the shapes real ECR (JSON 1.1 protocol) and STS (query protocol) send."""

from __future__ import annotations

import json
import secrets
import uuid
from xml.sax.saxutils import escape

STS_NS = "https://sts.amazonaws.com/doc/2011-06-15/"

# Abstract errors -> (ECR __type, ECR status, STS Code, STS status, STS Type)
ERRORS = {
    "AccessDenied": ("AccessDeniedException", 400, "AccessDenied", 403, "Sender"),
    "Throttling": ("ThrottlingException", 400, "Throttling", 400, "Sender"),
    "Unavailable": ("ServiceUnavailableException", 503, "ServiceUnavailable", 503, "Receiver"),
    "MissingAuthentication": ("MissingAuthenticationTokenException", 400,
                              "MissingAuthenticationToken", 403, "Sender"),
    "IncompleteSignature": ("IncompleteSignatureException", 400, "IncompleteSignature", 400, "Sender"),
    "UnknownKey": ("UnrecognizedClientException", 400, "InvalidClientTokenId", 403, "Sender"),
    "BadSignature": ("InvalidSignatureException", 400, "SignatureDoesNotMatch", 403, "Sender"),
    "ExpiredCredentials": ("ExpiredTokenException", 400, "ExpiredToken", 400, "Sender"),
    "InvalidParameter": ("InvalidParameterException", 400, "ValidationError", 400, "Sender"),
}

FAULT_MESSAGES = {
    "AccessDenied": "User: {arn} is not authorized to perform: {action} (injected by the regcred test bed)",
    "Throttling": "Rate exceeded (injected by the regcred test bed)",
    "Unavailable": "Service is unavailable. Please try again later. (injected by the regcred test bed)",
}


def request_id() -> str:
    return str(uuid.uuid4())


def ecr_error(kind: str, message: str) -> tuple[int, list[tuple[str, str]], bytes]:
    typ, status = ERRORS[kind][0], ERRORS[kind][1]
    return ecr_error_raw(typ, status, message)


def ecr_error_raw(typ: str, status: int, message: str) -> tuple[int, list[tuple[str, str]], bytes]:
    body = json.dumps({"__type": typ, "message": message}).encode()
    headers = [("Content-Type", "application/x-amz-json-1.1"),
               ("x-amzn-RequestId", request_id()),
               ("Content-Length", str(len(body)))]
    return status, headers, body


def sts_error(kind: str, message: str) -> tuple[int, list[tuple[str, str]], bytes]:
    _, _, code, status, typ = ERRORS[kind]
    return sts_error_raw(code, status, typ, message)


def sts_error_raw(code: str, status: int, typ: str, message: str) -> tuple[int, list[tuple[str, str]], bytes]:
    rid = request_id()
    body = (f'<ErrorResponse xmlns="{STS_NS}">\n'
            f"  <Error>\n    <Type>{typ}</Type>\n    <Code>{escape(code)}</Code>\n"
            f"    <Message>{escape(message)}</Message>\n  </Error>\n"
            f"  <RequestId>{rid}</RequestId>\n</ErrorResponse>\n").encode()
    headers = [("Content-Type", "text/xml"), ("x-amzn-RequestId", rid),
               ("Content-Length", str(len(body)))]
    return status, headers, body


def fault_message(kind: str, arn: str | None, action: str) -> str:
    return FAULT_MESSAGES[kind].format(arn=arn or "anonymous", action=action)


def random_id(n: int = 16) -> str:
    return secrets.token_hex(n)
