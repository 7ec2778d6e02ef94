"""Who is calling: the API key in ``Authorization: Bearer …``, its tenant and scopes.

Every /api/v1 route names the scope it needs (``Reader``, ``Sender``, ``Admin`` below);
``admin`` includes the others. In open mode (HERALD_AUTH=open, loopback only) every caller
is an admin of the default tenant.

An open API answers only requests whose ``Host`` names loopback: a page on another site
that a developer's browser opens cannot drive it through a DNS name rebound to 127.0.0.1.
`herald serve` starts open while no key exists; it closes the moment one does, in every
process (each looks again at most every :data:`OPEN_RECHECK_SECONDS`), and stays closed.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from herald.clock import utcnow
from herald.errors import ConfigError, ForbiddenError, HostNotAllowedError, UnauthorizedError
from herald.observability.logging import get_logger
from herald.store import api_keys
from herald.store.api_keys import ApiKey
from herald.store.database import Database
from herald.tenancy import DEFAULT_TENANT

log = get_logger(__name__)

# How long a process trusts what it read about a key: a revocation takes effect within this.
KEY_CACHE_SECONDS = 5.0
_CACHE_LIMIT = 10_000
# An API open until the first key exists looks for one at most this often.
OPEN_RECHECK_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str
    scopes: frozenset[str]
    key_id: str | None  # None in open mode

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


OPEN_PRINCIPAL = Principal(DEFAULT_TENANT, frozenset(api_keys.SCOPES), None)


class Authenticator:
    def __init__(self, db: Database, *, open_access: bool, until_first_key: bool = False) -> None:
        """``until_first_key``: open only until an API key exists (`herald serve`)."""
        self.db = db
        self.open_access = open_access
        self.until_first_key = open_access and until_first_key
        self._checked_at = -OPEN_RECHECK_SECONDS
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}

    async def principal(self, authorization: str | None, host: str | None = None) -> Principal:
        if await self._open():
            if not names_loopback(host):
                raise HostNotAllowedError(
                    "this API needs no key, so it answers only Host names of loopback "
                    "(localhost, 127.0.0.1, [::1])"
                )
            return OPEN_PRINCIPAL
        if not authorization:
            raise UnauthorizedError("an API key is required: Authorization: Bearer <key>")
        scheme, _, secret = authorization.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise UnauthorizedError("the Authorization header must be: Bearer <key>")
        key = await self._key(secret)
        if key is None or not key.usable(utcnow()):
            # One answer for unknown, revoked and expired: no oracle for key guessing.
            raise UnauthorizedError("the API key is not valid (unknown, revoked or expired)")
        return Principal(key.tenant_id, frozenset(key.scopes), key.id)

    async def _open(self) -> bool:
        if self.until_first_key and time.monotonic() - self._checked_at >= OPEN_RECHECK_SECONDS:
            self._checked_at = time.monotonic()
            async with self.db.read() as conn:
                if await api_keys.exist(conn):
                    self.close()
        return self.open_access

    def key_created(self) -> None:
        if self.until_first_key:
            self.close()

    def close(self) -> None:
        """A key exists: keys are required from now on."""
        if self.open_access:
            self.open_access = self.until_first_key = False
            log.warning("auth.closed", message="an API key exists: keys are required from now on")

    async def _key(self, secret: str) -> ApiKey | None:
        digest = api_keys.hash_key(secret)
        cached = self._cache.get(digest)
        if cached is not None and time.monotonic() - cached[0] < KEY_CACHE_SECONDS:
            return cached[1]
        # A read: guessed keys must not queue for the writer (SQLite has one).
        async with self.db.read() as conn:
            key = await api_keys.by_hash(conn, digest)
        if key is not None:
            async with self.db.write() as conn:
                await api_keys.touch(conn, key.id, utcnow())
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()  # guessed keys must not grow it without bound
        self._cache[digest] = (time.monotonic(), key)
        return key


@functools.lru_cache(maxsize=256)  # asked on every request of an open API; few Hosts recur
def names_loopback(host: str | None) -> bool:
    """Whether a ``Host`` header names this machine's loopback: ``localhost`` (and names
    under it, RFC 6761), or a loopback address, with or without a port."""
    if not host:
        return False
    name = host.strip().lower()
    if name.startswith("["):  # [::1]:8000
        name = name[1 : name.find("]")] if "]" in name else ""
    elif name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    if name.rstrip(".") == "localhost" or name.rstrip(".").endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` stands for is a loopback one (0.0.0.0 is not)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(found) and all(ipaddress.ip_address(a[4][0]).is_loopback for a in found)


def check_auth_setting(mode: str | None, host: str) -> None:
    """HERALD_AUTH=open on an address others can reach is refused before anything starts."""
    if mode == "open" and not is_loopback(host):
        raise ConfigError(
            f"HERALD_AUTH=open is only allowed on a loopback address; the API would listen on "
            f"{host}. Create a key (herald keys create) and use HERALD_AUTH=required."
        )


async def decide_open_access(
    mode: str | None, host: str, db: Database, *, open_by_default: bool
) -> bool:
    """Open when asked for (on loopback), or by default for `herald serve` on loopback
    while no key exists yet, so the first run needs no key (the Authenticator closes it when
    one is made). Announced loudly. ``check_auth_setting`` has refused an open API off
    loopback before this runs."""
    if mode is None:
        if not open_by_default or not is_loopback(host):
            return False
        async with db.read() as conn:
            if await api_keys.exist(conn):
                return False
    elif mode == "required":
        return False
    log.warning(
        "auth.open",
        message="API keys are NOT required: every caller is an admin of the default tenant. "
        "Loopback only; create a key (herald keys create) to turn this off.",
        host=host,
    )
    return True


async def authenticate(request: Request) -> Principal:
    """The caller, once per request (the rate limit asks first, the route's scope next)."""
    found: Principal | None = getattr(request.state, "principal", None)
    if found is None:
        authenticator: Authenticator = request.app.state.authenticator
        found = await authenticator.principal(
            request.headers.get("authorization"), request.headers.get("host")
        )
        request.state.principal = found
    return found


# Declares the scheme in the OpenAPI document (an Authorize button in /docs, auth in generated
# clients); authenticate() reads the header itself, as it must for the open mode too.
_BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="apiKey",
    description="An API key (`herald keys create`): `Authorization: Bearer <key>`.",
)
Declared = Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)]


def _require(scope: str) -> object:
    async def dependency(request: Request, _declared: Declared) -> Principal:
        found = await authenticate(request)
        if not found.allows(scope):
            raise ForbiddenError(f"this API key lacks the {scope!r} scope")
        return found

    return Depends(dependency)


Reader = Annotated[Principal, _require("read")]
Sender = Annotated[Principal, _require("send")]
Admin = Annotated[Principal, _require("admin")]
