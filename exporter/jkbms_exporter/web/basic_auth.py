"""Basic auth for ``basic_auth_users`` of the web config: bcrypt checks bounded in cost.

Start-up computes one dummy hash and every request at most one bcrypt check, each at the
users' cost factor; :data:`BCRYPT_COST` bounds that factor so neither can take minutes
(cost 12 is about 0.4 s on a desktop core and about 2 s on a Raspberry Pi 4; every step
doubles it).
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import hmac
import logging
import os
import re
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from .. import ranges
from ..install import install_command

log = logging.getLogger(__name__)

#: The realm sent in ``WWW-Authenticate``.
REALM = "jkbms-exporter"
#: $2a$/$2b$/$2y$, two-digit cost, 22 characters of salt and 31 of hash.
BCRYPT_HASH = re.compile(r"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")
#: bcrypt only looks at the first 72 bytes of a password (Go's and htpasswd's too).
BCRYPT_MAX_PASSWORD = 72
#: Allowed bcrypt cost factors (htpasswd -B uses 5, the toolkit's docs suggest 10).
BCRYPT_COST = ranges.Range(int, 4, 12)


class MissingBcrypt(ImportError):
    """The optional bcrypt package is not installed."""


def _load_bcrypt() -> Any:
    try:
        import bcrypt  # noqa: PLC0415 - optional dependency
    except ImportError:
        raise MissingBcrypt("needs the bcrypt package: %s" % install_command("web")) from None
    return bcrypt


def parse_basic_authorization(header: Optional[str]) -> Optional[Tuple[bytes, bytes]]:
    """``Basic base64(user:password)`` → (user, password) as bytes, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    return user, password


class BasicAuthenticator:
    """Checks basic-auth credentials against bcrypt hashes.

    - An unknown user costs a bcrypt verification too (against a dummy hash of the users'
      cost), so the answer time does not tell which user names exist.
    - A successful verification is remembered for ``cache_seconds`` under an HMAC of user
      and password keyed with a per-process random secret, so Prometheus scraping every
      15 s does not pay a bcrypt (half a second at cost 10 on a Raspberry Pi) each time.
      Only credentials that verified are ever remembered, so the cache cannot answer
      faster for an existing user with a wrong password than for an unknown user.
    - At most ``max_parallel`` bcrypt verifications run at once, so a flood of wrong
      passwords cannot take every core.
    """

    def __init__(self, users: Dict[str, bytes], cache_seconds: float = 300.0,
                 cache_size: int = 64, max_parallel: int = 2,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._bcrypt = _load_bcrypt()
        self.users = dict(users)
        self.cache_seconds = cache_seconds
        self.cache_size = cache_size
        self._clock = clock
        self._secret = os.urandom(32)
        self._cache: "collections.OrderedDict[bytes, Tuple[float, str]]" = \
            collections.OrderedDict()
        self._lock = threading.Lock()
        self._parallel = threading.BoundedSemaphore(max_parallel)
        costs = collections.Counter(int(h[4:6]) for h in self.users.values())
        cost = costs.most_common(1)[0][0] if costs else 10
        self._dummy_hash = self._bcrypt.hashpw(os.urandom(16).hex().encode("ascii"),
                                               self._bcrypt.gensalt(rounds=cost))

    def authenticate(self, authorization: Optional[str]) -> Optional[str]:
        """The user name if the ``Authorization`` header holds valid credentials, else None."""
        credentials = parse_basic_authorization(authorization)
        if credentials is None:
            return None
        user_bytes, password = credentials
        key = hmac.new(self._secret, user_bytes + b":" + password, hashlib.sha256).digest()
        now = self._clock()
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None:
                if entry[0] > now:
                    return entry[1]
                del self._cache[key]
        try:
            user: Optional[str] = user_bytes.decode("utf-8")
        except UnicodeDecodeError:
            user = None
        stored = self.users.get(user) if user is not None else None
        with self._parallel:
            matches = self._bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD],
                                           stored if stored is not None else self._dummy_hash)
        if not matches or stored is None or user is None:
            return None
        with self._lock:
            self._cache[key] = (now + self.cache_seconds, user)
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return user


StartResponse = Callable[..., object]


class BasicAuthMiddleware:
    """401 with ``WWW-Authenticate`` unless the request carries valid credentials."""

    def __init__(self, app: Callable, authenticator: BasicAuthenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        user = self.authenticator.authenticate(environ.get("HTTP_AUTHORIZATION"))
        if user is None:
            log.debug("unauthorized request from %s for %s", environ.get("REMOTE_ADDR"),
                      environ.get("PATH_INFO"))
            body = b"Unauthorized\n"
            start_response("401 Unauthorized", [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
                ("WWW-Authenticate", 'Basic realm="%s"' % REALM),
            ])
            return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else body]
        environ["REMOTE_USER"] = user
        return self.app(environ, start_response)
