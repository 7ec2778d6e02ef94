"""A Web Push service (RFC 8030) and the browsers that subscribe to it.

It checks what a real push service checks: the VAPID JWT (RFC 8292) verifies against the
``k=`` key, is for this origin (``aud``), and expires within 24 hours; the body is aes128gcm.
Unlike a real one it also plays the browser: it decrypts each message (RFC 8291) with the
subscription's private key, so tests can read what was sent. The JWT is checked with PyJWT,
not py_vapid, so a mistake shared by signer and checker cannot hide.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

import http_ece
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.fakes.http_server import LocalHttpServer, Request, Response


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class BrowserSubscription:
    """What ``pushManager.subscribe()`` gives a page, with the keys the browser keeps."""

    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes

    def to_json(self) -> str:
        public = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        keys = {"p256dh": b64url(public), "auth": b64url(self.auth)}
        return json.dumps({"endpoint": self.endpoint, "expirationTime": None, "keys": keys})

    def decrypt(self, body: bytes) -> bytes:
        plaintext: bytes = http_ece.decrypt(
            body, private_key=self.private_key, auth_secret=self.auth, version="aes128gcm"
        )
        return plaintext


@dataclass(frozen=True)
class Push:
    subscription: str  # the token in the endpoint's path
    payload: Any  # the decrypted JSON
    headers: dict[str, str]
    claims: dict[str, Any]


class PushService(LocalHttpServer):
    """``POST /push/<token>``: 201 with a Location, 410 once ``gone``, 401/403/400 on bad
    VAPID or encryption. ``pushes`` holds the accepted messages, ``rejections`` the reasons."""

    def __init__(
        self, application_server_key: str | None = None, *, host: str = "127.0.0.1"
    ) -> None:
        super().__init__(host)
        # The key the page subscribed with; a push service refuses tokens signed by another.
        self.application_server_key = application_server_key
        self.subscriptions: dict[str, BrowserSubscription] = {}
        self.gone_tokens: set[str] = set()
        self.pushes: list[Push] = []
        self.rejections: list[str] = []

    def subscribe(self) -> BrowserSubscription:
        token = uuid.uuid4().hex
        subscription = BrowserSubscription(
            f"{self.url}/push/{token}", ec.generate_private_key(ec.SECP256R1()), os.urandom(16)
        )
        with self.lock:
            self.subscriptions[token] = subscription
        return subscription

    def gone(self, subscription: BrowserSubscription) -> None:
        with self.lock:
            self.gone_tokens.add(subscription.endpoint.rsplit("/", 1)[1])

    def _reject(self, status: int, reason: str) -> Response:
        with self.lock:
            self.rejections.append(reason)
        return Response(status, reason.encode())

    def answer(self, request: Request) -> Response:
        token = request.path.removeprefix("/push/")
        with self.lock:
            subscription = self.subscriptions.get(token)
            gone = token in self.gone_tokens
        if request.method != "POST" or subscription is None:
            return self._reject(404, "no such subscription")
        if gone:
            return self._reject(410, "subscription expired")
        claims = self._check_vapid(request.headers.get("authorization", ""))
        if isinstance(claims, Response):
            return claims
        if request.headers.get("content-encoding") != "aes128gcm":
            return self._reject(400, "content-encoding must be aes128gcm")
        if not request.headers.get("ttl", "").isdigit():
            return self._reject(400, "missing TTL")
        if len(request.body) > 4096:
            return self._reject(413, "payload too large")
        try:
            payload = json.loads(subscription.decrypt(request.body))
        except Exception as exc:
            return self._reject(400, f"cannot decrypt: {exc!r}")
        with self.lock:
            self.pushes.append(Push(token, payload, request.headers, claims))
        return Response(201, headers={"Location": f"{self.url}/message/{uuid.uuid4().hex}"})

    def _check_vapid(self, header: str) -> dict[str, Any] | Response:
        scheme, _, params = header.partition(" ")
        if scheme.lower() != "vapid":
            return self._reject(401, "missing vapid authorization")
        fields = dict(p.strip().split("=", 1) for p in params.split(",") if "=" in p)
        if "t" not in fields or "k" not in fields:
            return self._reject(401, "vapid needs t= and k=")
        if self.application_server_key and fields["k"] != self.application_server_key:
            return self._reject(403, "k= is not the subscription's applicationServerKey")
        try:
            public = ec.EllipticCurvePublicKey.from_encoded_point(
                ec.SECP256R1(), b64url_decode(fields["k"])
            )
            claims: dict[str, Any] = jwt.decode(
                fields["t"],
                public,
                algorithms=["ES256"],
                audience=self.url,
                options={"require": ["exp", "aud", "sub"]},
            )
        except (ValueError, jwt.PyJWTError) as exc:
            return self._reject(401, f"bad vapid token: {exc}")
        if claims["exp"] > time.time() + 24 * 3600:
            return self._reject(401, "vapid token lives longer than 24 hours")
        if not str(claims["sub"]).startswith(("mailto:", "https://")):
            return self._reject(401, "vapid sub must be mailto: or https:")
        return claims
