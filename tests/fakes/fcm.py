"""A fake Google OAuth2 token endpoint and FCM HTTP v1 API, on one loopback server.

``POST /token`` checks a service account's JWT assertion (RS256 signature, iss, aud, scope,
exp) like Google does and issues random bearer tokens; ``POST /v1/projects/{p}/messages:send``
accepts only bearer tokens it issued and has not expired or revoked, validates the message
the way FCM does, and answers with FCM's v1 errors.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from tests.fakes.http_server import LocalHttpServer, Request, Response

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_SEND = re.compile(r"^/v1/projects/(?P<project>[^/]+)/messages:send$")
_MESSAGE_FIELDS = {
    "name",
    "data",
    "notification",
    "android",
    "webpush",
    "apns",
    "fcm_options",
    "token",
    "topic",
    "condition",
}
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def fcm_error(status: int, message: str, error_code: str | None = None, **headers: str) -> Response:
    """FCM v1's error body; ``error_code`` goes into an FcmError detail."""
    error: dict[str, Any] = {"code": status, "message": message, "status": _STATUS[status]}
    if error_code is not None:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": error_code,
            }
        ]
    return Response.of_json(status, {"error": error}, **headers)


def oauth_error(error: str, description: str, status: int = 400) -> Response:
    return Response.of_json(status, {"error": error, "error_description": description})


@dataclass(frozen=True)
class SentPush:
    name: str
    project: str
    access_token: str
    message: dict[str, Any]


class FakeFcm(LocalHttpServer):
    def __init__(
        self,
        public_key: RSAPublicKey,
        client_email: str,
        project_id: str,
        *,
        expires_in: int = 3600,
    ) -> None:
        super().__init__()
        self.public_key = public_key
        self.client_email = client_email
        self.project_id = project_id
        self.expires_in = expires_in
        self.pushes: list[SentPush] = []
        self.assertions: list[dict[str, Any]] = []  # decoded claims of accepted JWTs
        self.unregistered: set[str] = set()
        self._tokens: dict[str, float] = {}  # access token -> expiry (time.time())
        self._send_failures: list[Response] = []

    def fail_sends(self, count: int, response: Response) -> None:
        """Like ``fail_next``, but only for ``messages:send``: token requests still succeed."""
        with self.lock:
            self._send_failures.extend([response] * count)

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def unregister(self, device_token: str) -> None:
        with self.lock:
            self.unregistered.add(device_token)

    def revoke_all(self) -> None:
        with self.lock:
            self._tokens.clear()

    def expire_all(self) -> None:
        """As if our clock had run past the tokens' expiry while Herald's had not."""
        with self.lock:
            self._tokens = dict.fromkeys(self._tokens, 0.0)

    def token_requests(self) -> list[Request]:
        return self.received("/token")

    def send_requests(self) -> list[Request]:
        return self.received("/v1/")

    def answer(self, request: Request) -> Response:
        if request.method != "POST":
            return fcm_error(404, "Not found")
        if request.path == "/token":
            return self._token(request)
        match = _SEND.match(request.path)
        if match is None:
            return fcm_error(404, "Requested entity was not found.")
        return self._send(request, match["project"])

    # -- OAuth2 -------------------------------------------------------------------------

    def _token(self, request: Request) -> Response:
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return oauth_error("invalid_request", "Bad Request")
        form = request.form()
        if form.get("grant_type") != GRANT_TYPE:
            return oauth_error("unsupported_grant_type", "Invalid grant_type")
        try:
            claims = jwt.decode(
                form.get("assertion", ""),
                self.public_key,
                algorithms=["RS256"],
                audience=self.token_uri,
                issuer=self.client_email,
                options={"require": ["iss", "aud", "iat", "exp", "scope"]},
            )
        except jwt.InvalidSignatureError:
            return oauth_error("invalid_grant", "Invalid JWT Signature.")
        except jwt.InvalidTokenError as exc:
            return oauth_error("invalid_grant", f"Invalid JWT: {exc}")
        if claims["exp"] - claims["iat"] > 3600:
            return oauth_error("invalid_grant", "Invalid JWT: expiration too far in the future")
        if SCOPE not in str(claims["scope"]).split():
            return oauth_error("invalid_scope", "Invalid OAuth scope or ID token audience.")
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        with self.lock:
            self._tokens[token] = time.time() + self.expires_in
            self.assertions.append(claims)
        return Response.of_json(
            200, {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}
        )

    # -- FCM v1 -------------------------------------------------------------------------

    def _send(self, request: Request, project: str) -> Response:
        with self.lock:
            if self._send_failures:
                return self._send_failures.pop(0)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        with self.lock:
            expiry = self._tokens.get(token) if scheme == "Bearer" else None
        if expiry is None or expiry <= time.time():
            return fcm_error(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential.",
                **{"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
            )
        if project != self.project_id:
            return fcm_error(403, f"Permission denied on project {project}.")
        if not request.headers.get("content-type", "").startswith("application/json"):
            return fcm_error(400, "Invalid JSON payload received.")
        try:
            body = request.json()
        except ValueError:
            return fcm_error(400, "Invalid JSON payload received.")
        problem = _invalid(body)
        if problem is not None:
            return fcm_error(400, problem, "INVALID_ARGUMENT")
        message = body["message"]
        if message.get("token") in self.unregistered:
            return fcm_error(404, "Requested entity was not found.", "UNREGISTERED")
        name = f"projects/{project}/messages/0:{secrets.randbelow(10**16)}%{secrets.token_hex(8)}"
        with self.lock:
            self.pushes.append(SentPush(name, project, token, message))
        return Response.of_json(200, {"name": name})


def _invalid(body: Any) -> str | None:
    """What FCM would say about a malformed ``messages:send`` body, or None."""
    if not isinstance(body, dict) or set(body) - {"message", "validate_only"}:
        return "Invalid JSON payload received. Unknown name at top level."
    message = body.get("message")
    if not isinstance(message, dict):
        return "Request contains an invalid argument: message is required."
    unknown = set(message) - _MESSAGE_FIELDS
    if unknown:
        return f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}" at message.'
    targets = [k for k in ("token", "topic", "condition") if message.get(k)]
    if len(targets) != 1:
        return "Request contains an invalid argument: exactly one of token, topic, condition."
    if not isinstance(message.get("token", ""), str):
        return "Invalid value at 'message.token' (TYPE_STRING)."
    data = message.get("data", {})
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        return "Invalid value at 'message.data': values must be strings."
    notification = message.get("notification", {})
    if not isinstance(notification, dict) or set(notification) - {"title", "body", "image"}:
        return "Invalid value at 'message.notification'."
    if not all(isinstance(v, str) for v in notification.values()):
        return "Invalid value at 'message.notification' (TYPE_STRING)."
    android = message.get("android", {})
    if not isinstance(android, dict) or android.get("priority", "NORMAL") not in (
        "NORMAL",
        "HIGH",
    ):
        return "Invalid value at 'message.android.priority'."
    apns_headers = message.get("apns", {}).get("headers", {})
    if not isinstance(apns_headers, dict) or not all(
        isinstance(v, str) for v in apns_headers.values()
    ):
        return "Invalid value at 'message.apns.headers' (TYPE_STRING)."
    return None
