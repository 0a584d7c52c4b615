"""The ``tls_server_config`` of a web config: an :class:`ssl.SSLContext` built and checked
at start. Imported only when a web config asks for TLS (``ssl`` maps OpenSSL: megabytes)."""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
import tempfile
import warnings
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional, Tuple

from .web_fields import Problem, string, string_list, boolean

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


def check_peer(connection: ssl.SSLSocket, client_allowed_sans: Tuple[str, ...]) -> Optional[str]:
    """After the handshake: why this client must be turned away, or None."""
    if not client_allowed_sans:
        return None
    certificate = connection.getpeercert() or {}
    names = [_normalise_san(kind, value)
             for kind, value in certificate.get("subjectAltName", ())]
    allowed = {_normalise_san("", value) for value in client_allowed_sans}
    if any(name in allowed for name in names):
        return None
    return "client certificate has none of the allowed SANs (it has: %s)" % (
        ", ".join(names) or "none")


def describe(context: ssl.SSLContext) -> str:
    """``TLS`` and what it asks of clients, for the start-up log line."""
    mode = {ssl.CERT_NONE: "", ssl.CERT_OPTIONAL: ", optional client certificates",
            ssl.CERT_REQUIRED: ", client certificates required"}
    return "TLS%s" % mode[context.verify_mode]


def _normalise_san(kind: str, value: str) -> str:
    value = value.strip()
    try:
        return str(ipaddress.ip_address(value))  # OpenSSL writes IPv6 in full, upper case
    except ValueError:
        pass
    if kind == "DNS":
        return value.lower()
    return value


def build_ssl_context(section: Dict[str, Any], base_dir: str) -> Tuple[ssl.SSLContext, Tuple[str, ...]]:
    where = "tls_server_config"

    def spot(key: str) -> str:
        return "%s.%s" % (where, key)

    def path_of(key: str) -> Optional[str]:
        value = string(section, key, where)
        if value is None:
            return None
        full = os.path.join(base_dir, os.path.expanduser(value))
        if not os.path.isfile(full):
            raise Problem(spot(key), "%s: no such file" % full)
        if not os.access(full, os.R_OK):
            raise Problem(spot(key), "%s: not readable by this user" % full)
        return full

    cert_file, key_file = path_of("cert_file"), path_of("key_file")
    cert, key = string(section, "cert", where), string(section, "key", where)
    for file_key, inline_key in (("cert_file", "cert"), ("key_file", "key"),
                                 ("client_ca_file", "client_ca")):
        if section.get(file_key) is not None and section.get(inline_key) is not None:
            raise Problem(spot(inline_key), "give either %s or %s, not both"
                           % (file_key, inline_key))
    if cert_file is None and cert is None:
        raise Problem(spot("cert_file"), "missing: TLS needs a certificate")
    if key_file is None and key is None:
        raise Problem(spot("key_file"), "missing: TLS needs the certificate's private key")

    versions = {}
    for key_name, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        text = section.get(key_name) or default
        if not isinstance(text, str) or text not in TLS_VERSIONS:
            raise Problem(spot(key_name), "%r is not one of %s" % (text, ", ".join(TLS_VERSIONS)))
        versions[key_name] = TLS_VERSIONS[text]
    if versions["min_version"] > versions["max_version"]:
        raise Problem(spot("min_version"), "%s is above max_version %s" % (
            section.get("min_version"), section.get("max_version") or "TLS13"))

    auth_type = section.get("client_auth_type") or "NoClientCert"
    if not isinstance(auth_type, str) or auth_type not in CLIENT_AUTH_TYPES:
        raise Problem(spot("client_auth_type"), "%r is not one of %s" % (
            auth_type, ", ".join(CLIENT_AUTH_TYPES)))
    verify_mode = CLIENT_AUTH_TYPES[auth_type]
    if verify_mode is None:
        raise Problem(spot("client_auth_type"), "%s is not supported by jkbms-exporter "
                       "(Python's ssl module cannot accept a client certificate without "
                       "verifying it); use RequireAndVerifyClientCert with client_ca_file"
                       % auth_type)
    client_ca_file = path_of("client_ca_file")
    client_ca = string(section, "client_ca", where)
    has_ca = client_ca_file is not None or client_ca is not None
    if verify_mode == ssl.CERT_NONE and has_ca:
        raise Problem(spot("client_auth_type"), "a client CA is given but client_auth_type is "
                       "NoClientCert: set RequireAndVerifyClientCert to check client certificates")
    if verify_mode != ssl.CERT_NONE and not has_ca:
        raise Problem(spot("client_ca_file"), "missing: %s needs the CA that signs client "
                       "certificates" % auth_type)
    allowed_sans = tuple(string_list(section, "client_allowed_sans", where))
    if allowed_sans and verify_mode != ssl.CERT_REQUIRED:
        raise Problem(spot("client_allowed_sans"), "needs client_auth_type "
                       "RequireAndVerifyClientCert")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated: allowed, but warned about
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = versions["min_version"]
        context.maximum_version = versions["max_version"]
    ciphers = ""
    suites = string_list(section, "cipher_suites", where)
    if suites:
        unknown = [s for s in suites if s not in GO_CIPHER_SUITES and s not in TLS13_CIPHER_SUITES]
        if unknown:
            raise Problem(spot("cipher_suites"), "unknown or insecure cipher suite %s (known: %s)"
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
            raise Problem(spot("cipher_suites"), "OpenSSL here supports none of %s"
                           % ", ".join(suites)) from None
    if boolean(section, "prefer_server_cipher_suites", where, True):
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE

    with _pem_path(cert, "cert") as inline_cert, _pem_path(key, "key") as inline_key:
        try:
            context.load_cert_chain(cert_file or inline_cert, key_file or inline_key,
                                    password=_no_password)
        except (ssl.SSLError, OSError, ValueError) as error:
            which = "cert_file" if cert_file else "cert"
            raise Problem(spot(which), "cannot load the certificate and key (%s; "
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
            raise Problem(spot(which), "cannot load the CA certificates (%s)"
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
