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

import ipaddress
import logging
import os
import ssl
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from ..errors import ConfigError
from .basic_auth import (
    BCRYPT_COST,
    BCRYPT_HASH,
    BasicAuthenticator,
    BasicAuthMiddleware,
    HeadersMiddleware,
    MissingBcrypt,
)

__all__ = ["WebConfig", "load_web_config", "parse_web_config", "BasicAuthenticator"]

log = logging.getLogger(__name__)

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

#: client_auth_type → verify mode; None marks the Go policies Python's ssl cannot express.
CLIENT_AUTH_TYPES: Dict[str, Optional[ssl.VerifyMode]] = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": None,
    "RequireAnyClientCert": None,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}

#: Go's names of the TLS 1.2 cipher suites it offers by default → OpenSSL's names.
GO_CIPHER_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
}
#: TLS 1.3 suites: Go accepts their names and ignores them (TLS 1.3 suites are not
#: configurable there); so do we.
TLS13_CIPHER_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                       "TLS_CHACHA20_POLY1305_SHA256")

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

# ------------------------------------------------------------------------------ loading


#: How error messages name the file.
WEB_CONFIG_FILE = "web config file "


class _Problem(Exception):
    """A problem at a field (dotted path); made ``file:line: field: problem`` by the caller."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__("%s: %s" % (where, message) if where else message)
        self.where = where
        self.message = message


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
    except _Problem as problem:
        raise source.error(yamlfile.line_of(document, problem.where), problem.where,
                           problem.message) from None


def _mapping(value: Any, where: str, known: Iterable[str]) -> Dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Problem(where, "must be a mapping, not %s" % _kind(value))
    known = tuple(known)
    for key in value:
        name = "%s.%s" % (where, key) if where else str(key)
        if name in UNSUPPORTED:
            raise _Problem(name, UNSUPPORTED[name])
        if key not in known:
            raise _Problem(name, "unknown field (known: %s)" % ", ".join(known))
    return value


def _kind(value: Any) -> str:
    for kind, name in ((bool, "a boolean"), (dict, "a mapping"), (list, "a list"),
                       (str, "a string"), ((int, float), "a number")):
        if isinstance(value, kind):  # type: ignore[arg-type]
            return name
    return "empty" if value is None else type(value).__name__


def _string(section: Dict[str, Any], key: str, where: str) -> Optional[str]:
    value = section.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _Problem("%s.%s" % (where, key), "must be a non-empty string")
    return value


def _string_list(section: Dict[str, Any], key: str, where: str) -> List[str]:
    value = section.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _Problem("%s.%s" % (where, key), "must be a list of strings")
    return value


def _boolean(section: Dict[str, Any], key: str, where: str, default: bool) -> bool:
    value = section.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _Problem("%s.%s" % (where, key), "must be true or false")
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

    def check_peer(self, connection: ssl.SSLSocket) -> Optional[str]:
        """After the handshake: why this client must be turned away, or None."""
        if not self.client_allowed_sans:
            return None
        certificate = connection.getpeercert() or {}
        names = [_normalise_san(kind, value)
                 for kind, value in certificate.get("subjectAltName", ())]
        allowed = {_normalise_san("", value) for value in self.client_allowed_sans}
        if any(name in allowed for name in names):
            return None
        return "client certificate has none of the allowed SANs (it has: %s)" % (
            ", ".join(names) or "none")

    def wrap_app(self, app: Callable) -> Callable:
        """The WSGI app with basic auth and the configured headers around it."""
        if self.authenticator is not None:
            app = BasicAuthMiddleware(app, self.authenticator)
        if self.headers:
            app = HeadersMiddleware(app, self.headers)
        return app

    def describe(self) -> str:
        parts = []
        if self.ssl_context is not None:
            mode = {ssl.CERT_NONE: "", ssl.CERT_OPTIONAL: ", optional client certificates",
                    ssl.CERT_REQUIRED: ", client certificates required"}
            parts.append("TLS%s" % mode[self.ssl_context.verify_mode])
        if self.authenticator is not None:
            parts.append("basic auth (%d users)" % len(self.authenticator.users))
        return " and ".join(parts) or "plain HTTP, no authentication"


def _normalise_san(kind: str, value: str) -> str:
    value = value.strip()
    try:
        return str(ipaddress.ip_address(value))  # OpenSSL writes IPv6 in full, upper case
    except ValueError:
        pass
    if kind == "DNS":
        return value.lower()
    return value


def parse_web_config(document: Any, base_dir: str, path: str = "") -> WebConfig:
    """Check a loaded web config document; raise ``_Problem`` (made one line by the caller)."""
    top = _mapping(document, "", TOP_LEVEL_KEYS)
    config = WebConfig(path=path)
    if "tls_server_config" in top:
        config.ssl_context, config.client_allowed_sans = _tls(
            _mapping(top["tls_server_config"], "tls_server_config", TLS_KEYS), base_dir)
    if "http_server_config" in top:
        config.headers = _http(_mapping(top["http_server_config"], "http_server_config",
                                        HTTP_KEYS))
    users = _users(top["basic_auth_users"]) if top.get("basic_auth_users") is not None else {}
    if users:  # as in the toolkit, an empty list of users means no basic auth
        try:
            config.authenticator = BasicAuthenticator(users)
        except MissingBcrypt as error:
            raise _Problem("basic_auth_users", str(error)) from None
    if config.ssl_context is None and config.authenticator is None:
        log.warning("web config file %s sets up neither TLS nor basic auth", path)
    return config


def _users(value: Any) -> Dict[str, bytes]:
    where = "basic_auth_users"
    if not isinstance(value, dict):
        raise _Problem(where, "must be a mapping of user names to bcrypt hashes")
    users: Dict[str, bytes] = {}
    for name, hashed in value.items():
        if not isinstance(name, str) or not name:
            raise _Problem(where, "user name %r must be a non-empty string" % (name,))
        if ":" in name:
            raise _Problem("%s.%s" % (where, name), "a user name cannot contain ':' in basic auth")
        if not isinstance(hashed, str) or not BCRYPT_HASH.match(hashed.strip()):
            # Never echo the value: it might be a plain password put there by mistake.
            raise _Problem("%s.%s" % (where, name), "not a bcrypt hash ($2y$10$ followed by 53 "
                           "characters; make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n')")
        cost = int(BCRYPT_HASH.match(hashed.strip()).group(1))  # type: ignore[union-attr]
        try:
            BCRYPT_COST.check(cost)
        except ValueError:
            raise _Problem("%s.%s" % (where, name), "bcrypt cost %d is outside %d..%d: every "
                           "start and every login would take too long (cost %d takes about "
                           "2 s on a Raspberry Pi 4, each step doubles it); make a hash "
                           "with htpasswd -nBC 10" % (cost, BCRYPT_COST.low, BCRYPT_COST.high,
                                                      BCRYPT_COST.high)) from None
        users[name] = hashed.strip().encode("ascii")
    return users


def _http(section: Dict[str, Any]) -> List[Tuple[str, str]]:
    where = "http_server_config"
    _boolean(section, "http2", where, True)  # HTTP/1.1 only: http2 is accepted and ignored
    headers_value = section.get("headers")
    if headers_value is None:
        return []
    if not isinstance(headers_value, dict):
        raise _Problem(where + ".headers", "must be a mapping of header names to values")
    canonical = {name.lower(): name for name in ALLOWED_HEADERS}
    headers: List[Tuple[str, str]] = []
    for name, value in headers_value.items():
        spot = "%s.headers.%s" % (where, name)
        if not isinstance(name, str) or name.lower() not in canonical:
            raise _Problem(spot, "this header cannot be set (allowed: %s)"
                           % ", ".join(ALLOWED_HEADERS))
        name = canonical[name.lower()]
        if value is None or value == "":
            continue  # blank: unset, as in the toolkit
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            raise _Problem(spot, "must be a one-line string")
        allowed = ALLOWED_HEADERS[name]
        if allowed is not None and value.lower() not in allowed:
            raise _Problem(spot, "%r is not allowed (allowed: %s)" % (value, ", ".join(allowed)))
        headers.append((name, value))
    return headers


def _tls(section: Dict[str, Any], base_dir: str) -> Tuple[ssl.SSLContext, Tuple[str, ...]]:
    where = "tls_server_config"

    def spot(key: str) -> str:
        return "%s.%s" % (where, key)

    def path_of(key: str) -> Optional[str]:
        value = _string(section, key, where)
        if value is None:
            return None
        full = os.path.join(base_dir, os.path.expanduser(value))
        if not os.path.isfile(full):
            raise _Problem(spot(key), "%s: no such file" % full)
        if not os.access(full, os.R_OK):
            raise _Problem(spot(key), "%s: not readable by this user" % full)
        return full

    cert_file, key_file = path_of("cert_file"), path_of("key_file")
    cert, key = _string(section, "cert", where), _string(section, "key", where)
    for file_key, inline_key in (("cert_file", "cert"), ("key_file", "key"),
                                 ("client_ca_file", "client_ca")):
        if section.get(file_key) is not None and section.get(inline_key) is not None:
            raise _Problem(spot(inline_key), "give either %s or %s, not both"
                           % (file_key, inline_key))
    if cert_file is None and cert is None:
        raise _Problem(spot("cert_file"), "missing: TLS needs a certificate")
    if key_file is None and key is None:
        raise _Problem(spot("key_file"), "missing: TLS needs the certificate's private key")

    versions = {}
    for key_name, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        text = section.get(key_name) or default
        if not isinstance(text, str) or text not in TLS_VERSIONS:
            raise _Problem(spot(key_name), "%r is not one of %s" % (text, ", ".join(TLS_VERSIONS)))
        versions[key_name] = TLS_VERSIONS[text]
    if versions["min_version"] > versions["max_version"]:
        raise _Problem(spot("min_version"), "%s is above max_version %s" % (
            section.get("min_version"), section.get("max_version") or "TLS13"))

    auth_type = section.get("client_auth_type") or "NoClientCert"
    if not isinstance(auth_type, str) or auth_type not in CLIENT_AUTH_TYPES:
        raise _Problem(spot("client_auth_type"), "%r is not one of %s" % (
            auth_type, ", ".join(CLIENT_AUTH_TYPES)))
    verify_mode = CLIENT_AUTH_TYPES[auth_type]
    if verify_mode is None:
        raise _Problem(spot("client_auth_type"), "%s is not supported by jkbms-exporter "
                       "(Python's ssl module cannot accept a client certificate without "
                       "verifying it); use RequireAndVerifyClientCert with client_ca_file"
                       % auth_type)
    client_ca_file = path_of("client_ca_file")
    client_ca = _string(section, "client_ca", where)
    has_ca = client_ca_file is not None or client_ca is not None
    if verify_mode == ssl.CERT_NONE and has_ca:
        raise _Problem(spot("client_auth_type"), "a client CA is given but client_auth_type is "
                       "NoClientCert: set RequireAndVerifyClientCert to check client certificates")
    if verify_mode != ssl.CERT_NONE and not has_ca:
        raise _Problem(spot("client_ca_file"), "missing: %s needs the CA that signs client "
                       "certificates" % auth_type)
    allowed_sans = tuple(_string_list(section, "client_allowed_sans", where))
    if allowed_sans and verify_mode != ssl.CERT_REQUIRED:
        raise _Problem(spot("client_allowed_sans"), "needs client_auth_type "
                       "RequireAndVerifyClientCert")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated: allowed, but warned about
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = versions["min_version"]
        context.maximum_version = versions["max_version"]
    ciphers = ""
    suites = _string_list(section, "cipher_suites", where)
    if suites:
        unknown = [s for s in suites if s not in GO_CIPHER_SUITES and s not in TLS13_CIPHER_SUITES]
        if unknown:
            raise _Problem(spot("cipher_suites"), "unknown or insecure cipher suite %s (known: %s)"
                           % (unknown[0], ", ".join(GO_CIPHER_SUITES)))
        ciphers = ":".join(dict.fromkeys(GO_CIPHER_SUITES[s] for s in suites
                                         if s in GO_CIPHER_SUITES))
    if versions["min_version"] < ssl.TLSVersion.TLSv1_2:
        # OpenSSL's default security level refuses TLS 1.0/1.1 even when allowed here.
        log.warning("web config allows TLS versions before 1.2, which are insecure")
        ciphers = (ciphers or "DEFAULT") + ":@SECLEVEL=0"
    if ciphers:
        try:
            context.set_ciphers(ciphers)
        except ssl.SSLError:
            raise _Problem(spot("cipher_suites"), "OpenSSL here supports none of %s"
                           % ", ".join(suites)) from None
    if _boolean(section, "prefer_server_cipher_suites", where, True):
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE

    with _pem_path(cert, "cert") as inline_cert, _pem_path(key, "key") as inline_key:
        try:
            context.load_cert_chain(cert_file or inline_cert, key_file or inline_key,
                                    password=_no_password)
        except (ssl.SSLError, OSError, ValueError) as error:
            which = "cert_file" if cert_file else "cert"
            raise _Problem(spot(which), "cannot load the certificate and key (%s; "
                           "passphrase-protected keys are not supported)"
                           % _ssl_reason(error)) from None
    if verify_mode != ssl.CERT_NONE:
        try:
            if client_ca_file is not None:
                context.load_verify_locations(cafile=client_ca_file)
            else:
                context.load_verify_locations(cadata=client_ca)
        except (ssl.SSLError, OSError, ValueError) as error:
            which = "client_ca_file" if client_ca_file else "client_ca"
            raise _Problem(spot(which), "cannot load the CA certificates (%s)"
                           % _ssl_reason(error)) from None
        context.verify_mode = verify_mode
    context.set_alpn_protocols(["http/1.1"])
    return context, allowed_sans


def _no_password() -> bytes:
    return b""  # never prompt on the terminal for an encrypted key


def _ssl_reason(error: BaseException) -> str:
    reason = getattr(error, "reason", None)
    if reason:
        return str(reason).lower().replace("_", " ")
    return getattr(error, "strerror", None) or " ".join(str(error).split()) or type(error).__name__


@contextmanager
def _pem_path(text: Optional[str], name: str) -> Iterator[Optional[str]]:
    """An inline PEM (``cert:``/``key:``) as a path OpenSSL can load, without a file on disk
    where the system allows it (a memfd), else a private temporary file removed at once."""
    if text is None:
        yield None
        return
    data = text.encode("utf-8")
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("jkbms-web-" + name, getattr(os, "MFD_CLOEXEC", 0))
        try:
            os.write(fd, data)
            yield "/proc/self/fd/%d" % fd
        finally:
            os.close(fd)
        return
    directory = tempfile.mkdtemp(prefix="jkbms-web-")
    path = os.path.join(directory, name + ".pem")
    try:
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
            handle.write(data)
        yield path
    finally:
        os.unlink(path)
        os.rmdir(directory)
