"""``--web.config.file``: TLS, mutual TLS, basic auth and response headers.

The file has the format of the Prometheus exporter-toolkit (the ``web.yml`` of
node_exporter and Prometheus itself), so a user can reuse the one they already have:

.. code-block:: yaml

    tls_server_config:
      cert_file: server.crt          # paths are relative to this file's directory
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: ca.crt
      min_version: TLS12
    http_server_config:
      headers:
        X-Content-Type-Options: nosniff
    basic_auth_users:
      prometheus: $2y$10$...         # bcrypt hash, e.g. from `htpasswd -nBC 10 "" | tr -d ':\\n'`

Everything is checked when the exporter starts; anything wrong or not supported (an
unknown key included) is a :class:`~jkbms_exporter.config.ConfigError` whose one-line
message names the file and the field. Unlike the Go toolkit, the file is read once at
start: restart the exporter to pick up a new certificate.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple

from .web_fields import Problem, boolean, kind

if TYPE_CHECKING:  # ssl (OpenSSL, megabytes) and basic_auth (hashlib, hmac) load only when used
    import ssl

    from .basic_auth import BasicAuthenticator

__all__ = ["WebConfig", "load_web_config", "parse_web_config", "BasicAuthenticator"]

log = logging.getLogger(__name__)

#: Response headers the toolkit lets a web config set, with the values it allows (None: any).
ALLOWED_HEADERS: Dict[str, Optional[Tuple[str, ...]]] = {
    "Content-Security-Policy": None,
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-Content-Type-Options": ("nosniff",),
    "X-XSS-Protection": None,
    "Strict-Transport-Security": None,
}

TOP_LEVEL_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit")
TLS_KEYS = ("cert_file", "key_file", "cert", "key", "client_ca_file", "client_ca",
            "client_auth_type", "client_allowed_sans", "min_version", "max_version",
            "cipher_suites", "prefer_server_cipher_suites", "curve_preferences")
HTTP_KEYS = ("http2", "headers")

#: What the toolkit knows but this exporter does not do, and why.
UNSUPPORTED = {
    "rate_limit": "is not supported by jkbms-exporter (put a reverse proxy in front for "
                  "rate limiting; the exporter already bounds concurrent connections)",
    "tls_server_config.curve_preferences": "is not supported by jkbms-exporter (Python's ssl "
                                           "module cannot set a list of curves); remove it to "
                                           "use OpenSSL's defaults",
}

StartResponse = Callable[..., object]

# ------------------------------------------------------------------------------ loading


#: How error messages name the file.
WEB_CONFIG_FILE = "web config file "


def load_web_config(path: str) -> "WebConfig":
    """Read, check and build everything ``path`` asks for; ConfigError if anything is off."""
    from .. import yamlfile  # PyYAML only when there is a web config to read

    return web_config_from_text(yamlfile.YamlFile(path, WEB_CONFIG_FILE).read(), path)


def web_config_from_text(text: str, path: str) -> "WebConfig":
    """:func:`load_web_config` of the file ``path`` whose content is ``text``."""
    from .. import yamlfile

    source = yamlfile.YamlFile(path, WEB_CONFIG_FILE)
    document = source.load(text)
    try:
        return parse_web_config(document, os.path.dirname(os.path.abspath(path)), path)
    except Problem as problem:
        raise source.error(yamlfile.line_of(document, problem.where), problem.where,
                           problem.message) from None


def _mapping(value: Any, where: str, known: Iterable[str]) -> Dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Problem(where, "must be a mapping, not %s" % kind(value))
    known = tuple(known)
    for key in value:
        name = "%s.%s" % (where, key) if where else str(key)
        if name in UNSUPPORTED:
            raise Problem(name, UNSUPPORTED[name])
        if key not in known:
            raise Problem(name, "unknown field (known: %s)" % ", ".join(known))
    return value


@dataclass
class WebConfig:
    """What a web config file asks for, ready to use."""

    path: str = ""
    ssl_context: Optional[ssl.SSLContext] = None
    #: Client certificate SANs of which one must match (empty: any verified certificate).
    client_allowed_sans: Tuple[str, ...] = ()
    authenticator: Optional["BasicAuthenticator"] = None
    headers: List[Tuple[str, str]] = field(default_factory=list)

    @property
    def tls(self) -> bool:
        return self.ssl_context is not None

    def check_peer(self, connection: "ssl.SSLSocket") -> Optional[str]:
        """After the handshake: why this client must be turned away, or None."""
        if not self.client_allowed_sans:
            return None
        from .tls import check_peer

        return check_peer(connection, self.client_allowed_sans)

    def wrap_app(self, app: Callable) -> Callable:
        """The WSGI app with basic auth and the configured headers around it."""
        if self.authenticator is not None:
            from .basic_auth import BasicAuthMiddleware

            app = BasicAuthMiddleware(app, self.authenticator)
        if self.headers:
            app = HeadersMiddleware(app, self.headers)
        return app

    def describe(self) -> str:
        parts = []
        if self.ssl_context is not None:
            from .tls import describe

            parts.append(describe(self.ssl_context))
        if self.authenticator is not None:
            parts.append("basic auth (%d users)" % len(self.authenticator.users))
        return " and ".join(parts) or "plain HTTP, no authentication"


def parse_web_config(document: Any, base_dir: str, path: str = "") -> WebConfig:
    """Check a loaded web config document; raise ``Problem`` (made one line by the caller)."""
    top = _mapping(document, "", TOP_LEVEL_KEYS)
    config = WebConfig(path=path)
    if "tls_server_config" in top:
        from .tls import build_ssl_context

        config.ssl_context, config.client_allowed_sans = build_ssl_context(
            _mapping(top["tls_server_config"], "tls_server_config", TLS_KEYS), base_dir)
    if "http_server_config" in top:
        config.headers = _http(_mapping(top["http_server_config"], "http_server_config",
                                        HTTP_KEYS))
    users = _users(top["basic_auth_users"]) if top.get("basic_auth_users") is not None else {}
    if users:  # as in the toolkit, an empty list of users means no basic auth
        from .basic_auth import BasicAuthenticator, MissingBcrypt

        try:
            config.authenticator = BasicAuthenticator(users)
        except MissingBcrypt as error:
            raise Problem("basic_auth_users", str(error)) from None
    if config.ssl_context is None and config.authenticator is None:
        log.warning("web config file %s sets up neither TLS nor basic auth", path)
    return config


def _users(value: Any) -> Dict[str, bytes]:
    from .basic_auth import BCRYPT_COST, BCRYPT_HASH

    where = "basic_auth_users"
    if not isinstance(value, dict):
        raise Problem(where, "must be a mapping of user names to bcrypt hashes")
    users: Dict[str, bytes] = {}
    for name, hashed in value.items():
        if not isinstance(name, str) or not name:
            raise Problem(where, "user name %r must be a non-empty string" % (name,))
        if ":" in name:
            raise Problem("%s.%s" % (where, name), "a user name cannot contain ':' in basic auth")
        if not isinstance(hashed, str) or not BCRYPT_HASH.match(hashed.strip()):
            # Never echo the value: it might be a plain password put there by mistake.
            raise Problem("%s.%s" % (where, name), "not a bcrypt hash ($2y$10$ followed by 53 "
                           "characters; make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n')")
        cost = int(BCRYPT_HASH.match(hashed.strip()).group(1))  # type: ignore[union-attr]
        try:
            BCRYPT_COST.check(cost)
        except ValueError:
            raise Problem("%s.%s" % (where, name), "bcrypt cost %d is outside %d..%d: every "
                           "start and every login would take too long (cost %d takes about "
                           "2 s on a Raspberry Pi 4, each step doubles it); make a hash "
                           "with htpasswd -nBC 10" % (cost, BCRYPT_COST.low, BCRYPT_COST.high,
                                                      BCRYPT_COST.high)) from None
        users[name] = hashed.strip().encode("ascii")
    return users


def _http(section: Dict[str, Any]) -> List[Tuple[str, str]]:
    where = "http_server_config"
    boolean(section, "http2", where, True)  # HTTP/1.1 only: http2 is accepted and ignored
    headers_value = section.get("headers")
    if headers_value is None:
        return []
    if not isinstance(headers_value, dict):
        raise Problem(where + ".headers", "must be a mapping of header names to values")
    canonical = {name.lower(): name for name in ALLOWED_HEADERS}
    headers: List[Tuple[str, str]] = []
    for name, value in headers_value.items():
        spot = "%s.headers.%s" % (where, name)
        if not isinstance(name, str) or name.lower() not in canonical:
            raise Problem(spot, "this header cannot be set (allowed: %s)"
                           % ", ".join(ALLOWED_HEADERS))
        name = canonical[name.lower()]
        if value is None or value == "":
            continue  # blank: unset, as in the toolkit
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            raise Problem(spot, "must be a one-line string")
        allowed = ALLOWED_HEADERS[name]
        if allowed is not None and value.lower() not in allowed:
            raise Problem(spot, "%r is not allowed (allowed: %s)" % (value, ", ".join(allowed)))
        headers.append((name, value))
    return headers


class HeadersMiddleware:
    """Adds the ``http_server_config.headers`` to every response."""

    def __init__(self, app: Callable, headers: List[Tuple[str, str]]) -> None:
        self.app = app
        self.headers = headers
        self._names = {name.lower() for name, _ in headers}

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        def start(status: str, headers: List[Tuple[str, str]], *args: Any) -> object:
            kept = [(n, v) for n, v in headers if n.lower() not in self._names]
            return start_response(status, kept + self.headers, *args)

        return self.app(environ, start)


#: Names kept importable from here, loaded on first use (they pull in ssl or hashlib).
_LAZY = {"BasicAuthenticator": "basic_auth", "TLS_VERSIONS": "tls", "CLIENT_AUTH_TYPES": "tls",
         "GO_CIPHER_SUITES": "tls", "TLS13_CIPHER_SUITES": "tls"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    if _LAZY[name] == "tls":
        from . import tls as module
    else:
        from . import basic_auth as module  # type: ignore[no-redef]
    return getattr(module, name)
