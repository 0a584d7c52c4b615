"""--web.config.file: TLS, mutual TLS, basic auth, and the service files.

Real TLS clients (Python's ssl with http.client, openssl s_client, curl) talk to a real
server: in-process ``make_http_server`` for most cases, the ``serve`` subprocess for the
end-to-end ones. Certificates are made here, with the cryptography package.
"""

from __future__ import annotations

import base64
import datetime
import http.client
import ipaddress
import random
import re
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import bcrypt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import REPO, find_tool

from jkbms_exporter.web import webconfig
from jkbms_exporter.config import ConfigError
from jkbms_exporter.web.server import make_http_server
from jkbms_exporter.web.webconfig import BasicAuthenticator, load_web_config

PASSWORD = "correct horse battery staple"
#: Cheap hashes for the functional tests; the timing test makes its own.
ALICE_HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


# ----------------------------------------------------------------------------- certificates


class Pki:
    """A CA with a server and a client certificate, and a second CA with its own client."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        now = datetime.datetime.now(datetime.timezone.utc)
        self._validity = (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2))
        ca_key, ca_cert = self._ca("jkbms test CA")
        rogue_key, rogue_cert = self._ca("somebody else's CA")
        self.ca = self._write("ca.crt", ca_cert)
        self.rogue_ca = self._write("rogue-ca.crt", rogue_cert)
        self.server_cert, self.server_key = self._leaf(
            "server", ca_key, ca_cert, ExtendedKeyUsageOID.SERVER_AUTH,
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        self.client_cert, self.client_key = self._leaf(
            "client", ca_key, ca_cert, ExtendedKeyUsageOID.CLIENT_AUTH,
            [x509.DNSName("prometheus.example"),
             x509.UniformResourceIdentifier("spiffe://example/prometheus")])
        self.rogue_client_cert, self.rogue_client_key = self._leaf(
            "rogue-client", rogue_key, rogue_cert, ExtendedKeyUsageOID.CLIENT_AUTH,
            [x509.DNSName("prometheus.example")])

    def _builder(self, subject: str, issuer: x509.Name,
                 public_key: object) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                .issuer_name(issuer)
                .public_key(public_key)
                .serial_number(x509.random_serial_number())
                .not_valid_before(self._validity[0])
                .not_valid_after(self._validity[1])
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                               critical=False))

    def _ca(self, name: str) -> Tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (self._builder(name, subject, key.public_key())
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                             crl_sign=True, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False,
                                             key_agreement=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        return key, cert

    def _leaf(self, name: str, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
              usage: x509.ObjectIdentifier, sans: List[x509.GeneralName]) -> Tuple[str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (self._builder(name, ca_cert.subject, key.public_key())
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))
        key_path = self.dir / (name + ".key")
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return self._write(name + ".crt", cert), str(key_path)

    def _write(self, name: str, cert: x509.Certificate) -> str:
        path = self.dir / name
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return str(path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def web_yml(pki: Pki, body: str, name: str = "web.yml") -> str:
    """A web config in the PKI directory, so cert_file: server.crt etc. are relative."""
    path = pki.dir / name
    path.write_text(body)
    return str(path)


TLS_ONLY = """
tls_server_config:
  cert_file: server.crt
  key_file: server.key
"""

MTLS = """
tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.crt
"""


# ------------------------------------------------------------------------ server and client


def hello_app(environ: dict, start_response) -> List[bytes]:
    body = b"jkbms_up 1\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@contextmanager
def serving(web_config=None, app=hello_app, **options) -> Iterator[int]:
    server = make_http_server(app, "127.0.0.1:0", web_config, **options)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def client_context(pki: Pki, cert: Optional[str] = None, key: Optional[str] = None,
                   minimum: Optional[ssl.TLSVersion] = None,
                   maximum: Optional[ssl.TLSVersion] = None,
                   ciphers: Optional[str] = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.ca)
    if cert:
        context.load_cert_chain(cert, key)
    if minimum:
        context.minimum_version = minimum
    if maximum:
        context.maximum_version = maximum
    if ciphers:
        context.set_ciphers(ciphers)
    return context


def basic(user: str, password: str) -> Dict[str, str]:
    token = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
    return {"Authorization": "Basic " + token}


class Response:
    def __init__(self, response: http.client.HTTPResponse, body: bytes, tls_version: str,
                 cipher: str) -> None:
        self.status = response.status
        self.headers = response.headers
        self.body = body
        self.tls_version = tls_version
        self.cipher = cipher


def request(port: int, path: str = "/metrics", context: Optional[ssl.SSLContext] = None,
            headers: Optional[Dict[str, str]] = None, method: str = "GET",
            timeout: float = 5.0) -> Response:
    if context is None:
        connection: http.client.HTTPConnection = http.client.HTTPConnection(
            "127.0.0.1", port, timeout=timeout)
    else:
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context,
                                                 timeout=timeout)
    try:
        connection.connect()
        sock = connection.sock
        version = sock.version() if isinstance(sock, ssl.SSLSocket) else ""
        cipher = sock.cipher()[0] if isinstance(sock, ssl.SSLSocket) else ""
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        body = response.read()
        return Response(response, body, version, cipher)
    finally:
        connection.close()


#: What a client sees when the server refuses its certificate or TLS version: a failed
#: handshake, or (TLS 1.3, where the client finishes first) an alert or a closed
#: connection at the first read.
REFUSED = (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)


# ------------------------------------------------------------------------------- basic auth


def test_basic_auth_over_tls(pki: Pki) -> None:
    config = load_web_config(web_yml(pki, TLS_ONLY + """
basic_auth_users:
  alice: %s
  bob: %s
""" % (ALICE_HASH, bcrypt.hashpw(b"bobs password", bcrypt.gensalt(4)).decode())))
    context = client_context(pki)
    with serving(config) as port:
        ok = request(port, context=context, headers=basic("alice", PASSWORD))
        assert ok.status == 200 and ok.body == b"jkbms_up 1\n"
        assert request(port, context=context, headers=basic("bob", "bobs password")).status == 200
        for path in ("/metrics", "/", "/nowhere"):
            missing = request(port, path, context=context)
            assert missing.status == 401, path
            assert missing.headers["WWW-Authenticate"] == 'Basic realm="jkbms-exporter"'
            assert b"jkbms_up" not in missing.body
        for headers in (basic("alice", "wrong"), basic("alice", PASSWORD + "x"),
                        basic("bob", PASSWORD),  # another user's password
                        basic("mallory", PASSWORD), basic("", ""),
                        {"Authorization": "Basic !!notbase64"},
                        {"Authorization": "Bearer " + base64.b64encode(b"alice:x").decode()}):
            denied = request(port, context=context, headers=headers)
            assert denied.status == 401, headers
            assert denied.headers["WWW-Authenticate"] == 'Basic realm="jkbms-exporter"'
        # A user name that is not UTF-8 is just an unknown user.
        raw = {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:x").decode()}
        assert request(port, context=context, headers=raw).status == 401
        assert ok.tls_version in ("TLSv1.2", "TLSv1.3")


def test_unknown_user_costs_the_same_as_a_wrong_password(tmp_path: Path) -> None:
    """The answer time must not tell which user names exist."""
    hashed = bcrypt.hashpw(b"the real one", bcrypt.gensalt(rounds=8)).decode()
    path = tmp_path / "web.yml"
    path.write_text("basic_auth_users:\n  alice: %s\n" % hashed)
    config = load_web_config(str(path))
    kinds = {"known user, wrong password": basic("alice", "guess"),
             "unknown user": basic("nobody", "guess"),
             "no credentials": {}}
    times: Dict[str, List[float]] = {kind: [] for kind in kinds}
    order = [kind for kind in kinds for _ in range(30)]
    random.Random(4).shuffle(order)
    with serving(config) as port:
        for kind in kinds:  # warm up
            request(port, headers=kinds[kind])
        for kind in order:
            start = time.perf_counter()
            assert request(port, headers=kinds[kind]).status == 401
            times[kind].append(time.perf_counter() - start)
    known = statistics.median(times["known user, wrong password"])
    unknown = statistics.median(times["unknown user"])
    none = statistics.median(times["no credentials"])
    ratio = unknown / known
    print("median 401 time: wrong password %.2f ms, unknown user %.2f ms (ratio %.3f), "
          "no credentials %.2f ms" % (known * 1e3, unknown * 1e3, ratio, none * 1e3))
    # The measurement can see a bcrypt: skipping it is far faster.
    assert none < 0.5 * known, (none, known)
    assert 0.75 < ratio < 1.33, ratio


class CountingBcrypt:
    def __init__(self) -> None:
        self.checks: List[bytes] = []

    def checkpw(self, password: bytes, hashed: bytes) -> bool:
        self.checks.append(hashed)
        return bcrypt.checkpw(password, hashed)

    def hashpw(self, password: bytes, salt: bytes) -> bytes:
        return bcrypt.hashpw(password, salt)

    def gensalt(self, rounds: int) -> bytes:
        return bcrypt.gensalt(rounds=rounds)


def test_successful_logins_are_cached_briefly_and_nothing_else() -> None:
    now = [1000.0]
    auth = BasicAuthenticator({"alice": ALICE_HASH.encode()}, cache_seconds=300,
                              clock=lambda: now[0])
    counting = CountingBcrypt()
    auth._bcrypt = counting
    alice = basic("alice", PASSWORD)["Authorization"]

    assert auth.authenticate(alice) == "alice"
    assert len(counting.checks) == 1
    for _ in range(5):  # Prometheus scraping: no bcrypt while the entry lives
        assert auth.authenticate(alice) == "alice"
    assert len(counting.checks) == 1
    # A wrong password for a cached user, and an unknown user, still pay a bcrypt each
    # time, against the user's hash and the dummy hash of the same cost respectively.
    for _ in range(3):
        assert auth.authenticate(basic("alice", "wrong")["Authorization"]) is None
        assert auth.authenticate(basic("nobody", PASSWORD)["Authorization"]) is None
    assert len(counting.checks) == 7
    assert counting.checks[1] == ALICE_HASH.encode()
    dummy = counting.checks[2]
    assert dummy != ALICE_HASH.encode() and dummy[4:6] == ALICE_HASH.encode()[4:6]
    # Expiry: after the cache time the password is checked again.
    now[0] += 301
    assert auth.authenticate(alice) == "alice"
    assert len(counting.checks) == 8


def test_dummy_hash_has_the_users_cost() -> None:
    hashed = bcrypt.hashpw(b"x", bcrypt.gensalt(rounds=6))
    auth = BasicAuthenticator({"alice": hashed})
    assert auth._dummy_hash[:7] == b"$2b$06$"


def test_long_passwords_follow_bcrypt_72_byte_rule() -> None:
    long_password = "p" * 100
    hashed = bcrypt.hashpw(long_password.encode()[:72], bcrypt.gensalt(4))
    auth = BasicAuthenticator({"alice": hashed})
    assert auth.authenticate(basic("alice", long_password)["Authorization"]) == "alice"


def test_htpasswd_style_2y_hashes_work(pki: Pki) -> None:
    hashed = ALICE_HASH.replace("$2b$", "$2y$", 1)
    config = load_web_config(web_yml(pki, "basic_auth_users:\n  alice: '%s'\n" % hashed,
                                     "2y.yml"))
    with serving(config) as port:
        assert request(port, headers=basic("alice", PASSWORD)).status == 200
        assert request(port, headers=basic("alice", "nope")).status == 401


def test_configured_headers_are_on_every_answer(pki: Pki) -> None:
    config = load_web_config(web_yml(pki, """
http_server_config:
  http2: false
  headers:
    X-Frame-Options: deny
    X-Content-Type-Options: nosniff
    Strict-Transport-Security: max-age=31536000
basic_auth_users:
  alice: %s
""" % ALICE_HASH, "headers.yml"))
    with serving(config) as port:
        for response in (request(port, headers=basic("alice", PASSWORD)),
                         request(port),
                         request(port, method="POST", headers=basic("alice", PASSWORD))):
            assert response.status in (200, 401, 405)
            assert response.headers["X-Frame-Options"] == "deny"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["Strict-Transport-Security"] == "max-age=31536000"


# ------------------------------------------------------------------------------------- TLS


def test_tls_serves_and_plain_http_is_refused(pki: Pki) -> None:
    config = load_web_config(web_yml(pki, TLS_ONLY))
    with serving(config) as port:
        response = request(port, context=client_context(pki))
        assert response.status == 200 and response.body == b"jkbms_up 1\n"
        assert response.tls_version == "TLSv1.3"  # default max_version TLS13
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            request(port)  # plain HTTP to a TLS port gets no HTTP answer
        # A client that does not trust our CA refuses the server.
        with pytest.raises(ssl.SSLCertVerificationError):
            request(port, context=ssl.create_default_context(cafile=pki.rogue_ca))


def test_mutual_tls_requires_a_certificate_from_the_ca(pki: Pki) -> None:
    config = load_web_config(web_yml(pki, MTLS))
    with serving(config) as port:
        good = client_context(pki, pki.client_cert, pki.client_key)
        assert request(port, context=good).status == 200
        for maximum in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            with pytest.raises(REFUSED):
                request(port, context=client_context(pki, maximum=maximum))
            with pytest.raises(REFUSED):
                request(port, context=client_context(pki, pki.rogue_client_cert,
                                                     pki.rogue_client_key, maximum=maximum))
        # The server still works after refusing.
        assert request(port, context=good).status == 200


def test_verify_client_cert_if_given(pki: Pki) -> None:
    config = load_web_config(web_yml(pki, TLS_ONLY + """
  client_auth_type: VerifyClientCertIfGiven
  client_ca_file: ca.crt
""", "ifgiven.yml"))
    with serving(config) as port:
        assert request(port, context=client_context(pki)).status == 200
        assert request(port, context=client_context(pki, pki.client_cert,
                                                     pki.client_key)).status == 200
        with pytest.raises(REFUSED):
            request(port, context=client_context(pki, pki.rogue_client_cert,
                                                 pki.rogue_client_key))


@pytest.mark.parametrize("sans, allowed", [
    (["prometheus.example"], True),
    (["spiffe://example/prometheus", "other.example"], True),
    (["grafana.example"], False),
])
def test_client_allowed_sans(pki: Pki, sans: List[str], allowed: bool) -> None:
    config = load_web_config(web_yml(pki, MTLS + "  client_allowed_sans: %s\n" % sans,
                                     "sans.yml"))
    context = client_context(pki, pki.client_cert, pki.client_key)
    with serving(config) as port:
        if allowed:
            assert request(port, context=context).status == 200
        else:
            with pytest.raises(REFUSED):
                request(port, context=context)


def test_min_and_max_version(pki: Pki) -> None:
    only13 = load_web_config(web_yml(pki, TLS_ONLY + "  min_version: TLS13\n", "min13.yml"))
    with serving(only13) as port:
        with pytest.raises(ssl.SSLError):
            request(port, context=client_context(pki, maximum=ssl.TLSVersion.TLSv1_2))
        assert request(port, context=client_context(pki)).tls_version == "TLSv1.3"
        # Another TLS implementation's view: openssl s_client.
        openssl = find_tool("openssl")

        def s_client(flag: str) -> subprocess.CompletedProcess:
            return subprocess.run([openssl, "s_client", "-connect", "127.0.0.1:%d" % port,
                                   "-CAfile", pki.ca, flag, "-brief"],
                                  input="", capture_output=True, text=True, timeout=20)

        refused, accepted = s_client("-tls1_2"), s_client("-tls1_3")
        assert refused.returncode != 0, refused.stdout + refused.stderr
        assert accepted.returncode == 0, accepted.stderr
        assert "TLSv1.3" in accepted.stdout + accepted.stderr
    only12 = load_web_config(web_yml(pki, TLS_ONLY + "  max_version: TLS12\n", "max12.yml"))
    with serving(only12) as port:
        assert request(port, context=client_context(pki)).tls_version == "TLSv1.2"
        with pytest.raises(ssl.SSLError):
            request(port, context=client_context(pki, minimum=ssl.TLSVersion.TLSv1_3))


def test_cipher_suites_in_go_names(pki: Pki) -> None:
    config = load_web_config(web_yml(pki, TLS_ONLY + """
  max_version: TLS12
  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]
""", "ciphers.yml"))
    with serving(config) as port:
        assert request(port, context=client_context(pki)).cipher == "ECDHE-ECDSA-AES256-GCM-SHA384"
        with pytest.raises(ssl.SSLError):
            request(port, context=client_context(pki, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256"))


def test_inline_certificate_and_key(pki: Pki) -> None:
    indent = lambda text: "\n".join("    " + line for line in text.splitlines())  # noqa: E731
    config = load_web_config(web_yml(pki, """
tls_server_config:
  cert: |
%s
  key: |
%s
""" % (indent(Path(pki.server_cert).read_text()), indent(Path(pki.server_key).read_text())),
        "inline.yml"))
    with serving(config) as port:
        assert request(port, context=client_context(pki)).status == 200


def test_stalled_tls_clients_do_not_block_other_scrapes(pki: Pki) -> None:
    """Connections that never send a ClientHello, or stop half-way through it, even when
    they hold every connection slot (the oldest makes room for the scrape)."""
    config = load_web_config(web_yml(pki, TLS_ONLY))
    with serving(config, handshake_timeout=30, max_connections=6) as port:
        stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
        half = socket.create_connection(("127.0.0.1", port))
        half.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's start
        stalled.append(half)
        try:
            time.sleep(0.3)  # let the server accept them all
            start = time.perf_counter()
            assert request(port, context=client_context(pki), timeout=5).status == 200
            elapsed = time.perf_counter() - start
        finally:
            for sock in stalled:
                sock.close()
    print("TLS scrape beside 6 stalled handshakes: %.1f ms" % (elapsed * 1e3))
    assert elapsed < 2.0


def test_stalled_tls_handshake_is_dropped_after_the_timeout(pki: Pki) -> None:
    config = load_web_config(web_yml(pki, TLS_ONLY))
    with serving(config, handshake_timeout=1.0) as port:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.settimeout(5)
            start = time.perf_counter()
            try:
                data = sock.recv(100)
            except ConnectionResetError:
                data = b""
            elapsed = time.perf_counter() - start
    assert data == b""
    assert 0.8 < elapsed < 3.0, elapsed


# ------------------------------------------------------------------------ configuration errors


def _python(*code_and_args: str) -> List[str]:
    return [sys.executable, *code_and_args]


BAD_CONFIGS = {
    # name: (file content, words the one-line error must contain)
    "unknown top-level key": ("tls_config:\n  cert_file: server.crt\n",
                              ["tls_config", "unknown field"]),
    "unknown tls key": (TLS_ONLY + "  certfile: x\n", ["tls_server_config.certfile", "unknown"]),
    "missing cert file": ("tls_server_config:\n  cert_file: nope.crt\n  key_file: server.key\n",
                          ["tls_server_config.cert_file", "nope.crt"]),
    "no key": ("tls_server_config:\n  cert_file: server.crt\n", ["tls_server_config.key_file"]),
    "key of another cert": ("tls_server_config:\n  cert_file: server.crt\n  key_file: client.key\n",
                            ["tls_server_config.cert_file", "key values mismatch"]),
    "bad client_auth_type": (TLS_ONLY + "  client_auth_type: Sometimes\n",
                             ["tls_server_config.client_auth_type", "Sometimes"]),
    "unsupported client_auth_type": (TLS_ONLY + "  client_auth_type: RequireAnyClientCert\n",
                                     ["client_auth_type", "not supported"]),
    "mTLS without CA": (TLS_ONLY + "  client_auth_type: RequireAndVerifyClientCert\n",
                        ["tls_server_config.client_ca_file", "missing"]),
    "bad min_version": (TLS_ONLY + "  min_version: TLS14\n",
                        ["tls_server_config.min_version", "TLS14"]),
    "min above max": (TLS_ONLY + "  min_version: TLS13\n  max_version: TLS12\n",
                      ["tls_server_config.min_version"]),
    "unknown cipher": (TLS_ONLY + "  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n",
                       ["tls_server_config.cipher_suites", "TLS_RSA_WITH_RC4_128_SHA"]),
    "curve preferences": (TLS_ONLY + "  curve_preferences: [X25519]\n",
                          ["curve_preferences", "not supported"]),
    "rate limit": ("rate_limit:\n  interval: 1s\n  burst: 5\n", ["rate_limit", "not supported"]),
    "header not allowed": ("http_server_config:\n  headers:\n    Server: mine\n",
                           ["http_server_config.headers.Server"]),
    "plain password": ("basic_auth_users:\n  alice: hunter2secret\n",
                       ["basic_auth_users.alice", "bcrypt"]),
    "duplicate user": ("basic_auth_users:\n  alice: %s\n  alice: %s\n" % (ALICE_HASH, ALICE_HASH),
                       ["duplicate", "alice"]),
    "not YAML": ("tls_server_config: [unclosed\n", ["not valid YAML", ":2:"]),
    "not a mapping": ("- just\n- a list\n", ["must be a mapping"]),
}


def test_bad_config_files_fail_in_one_line(pki: Pki, tmp_path: Path) -> None:
    """Every case as a real `serve` subprocess (run side by side to keep this quick)."""
    runs = {}
    for name, (content, _) in BAD_CONFIGS.items():
        path = web_yml(pki, content, "bad-%s.yml" % re.sub(r"\W+", "-", name))
        runs[name] = ["serve", "--simulate", "--web.listen-address", "127.0.0.1:0",
                      "--web.config.file", path]
    runs["missing file"] = ["serve", "--simulate", "--web.config.file", str(tmp_path / "no.yml")]
    needs_bcrypt = web_yml(pki, "basic_auth_users:\n  alice: %s\n" % ALICE_HASH, "bcrypt.yml")
    processes = {}
    for name, args in runs.items():
        processes[name] = subprocess.Popen(
            [sys.executable, "-m", "jkbms_exporter", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    processes["bcrypt not installed"] = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.modules['bcrypt'] = None; "
         "from jkbms_exporter.cli import main; sys.exit(main(sys.argv[1:]))",
         "serve", "--simulate", "--web.listen-address", "127.0.0.1:0",
         "--web.config.file", needs_bcrypt],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    expected = {name: words for name, (_, words) in BAD_CONFIGS.items()}
    expected["missing file"] = ["no.yml", "cannot read"]
    # the command for this installation: the test venv's pip, this checkout (test_install.py)
    expected["bcrypt not installed"] = ["basic_auth_users", "-m pip install -e ",
                                        "%s[web]" % REPO]
    failures = []
    for name, process in processes.items():
        try:
            stdout, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            failures.append("%s: still running (the config was accepted?)" % name)
            continue
        lines = stderr.strip().splitlines()
        if process.returncode != 2 or len(lines) != 1:
            failures.append("%s: exit %s, stderr %r" % (name, process.returncode, stderr))
            continue
        line = lines[0]
        if not line.startswith("jkbms-exporter: web config file "):
            failures.append("%s: %r" % (name, line))
        missing = [word for word in expected[name] if word not in line]
        if missing:
            failures.append("%s: %r lacks %s" % (name, line, missing))
        if "hunter2secret" in line:
            failures.append("%s: the error repeats the secret: %r" % (name, line))
    assert not failures, "\n".join(failures)


def test_empty_user_list_means_no_basic_auth_as_in_the_toolkit(pki: Pki) -> None:
    assert load_web_config(web_yml(pki, "basic_auth_users: {}\n", "empty.yml")).authenticator \
        is None
    assert load_web_config(web_yml(pki, "", "empty-file.yml")).ssl_context is None


def test_good_config_errors_are_config_errors_in_process(pki: Pki) -> None:
    """The library raises ConfigError (no sys.exit, no traceback text) for the CLI to print."""
    with pytest.raises(ConfigError, match=r"web config file .*: tls_server_config\.certfile"):
        load_web_config(web_yml(pki, TLS_ONLY + "  certfile: x\n", "lib.yml"))
    assert "RequestClientCert" in webconfig.CLIENT_AUTH_TYPES


# ---------------------------------------------------------------------- the real exporter


def test_exporter_with_tls_client_certs_and_basic_auth(pki: Pki, start_exporter) -> None:
    path = web_yml(pki, MTLS + "basic_auth_users:\n  alice: %s\n" % ALICE_HASH, "full.yml")
    exporter = start_exporter("--simulate", "--web.config.file", path)
    url = "https://127.0.0.1:%d/metrics" % exporter.port
    curl = find_tool("curl")
    base = [curl, "-s", "-o", "-", "-w", "\\n%{http_code}", "--max-time", "20",
            "--cacert", pki.ca]
    with_cert = base + ["--cert", pki.client_cert, "--key", pki.client_key]

    def run(args: List[str]) -> Tuple[int, str, str]:
        result = subprocess.run(args, capture_output=True, text=True, timeout=30)
        body, _, code = result.stdout.rpartition("\n")
        return result.returncode, code, body

    rc, code, body = run(with_cert + ["-u", "alice:" + PASSWORD, url])
    assert (rc, code) == (0, "200"), body
    assert 'jkbms_up{pack="sim"} 1.0' in body
    rc, code, _ = run(with_cert + [url])
    assert (rc, code) == (0, "401")
    rc, code, _ = run(with_cert + ["-u", "alice:wrong", url])
    assert (rc, code) == (0, "401")
    rc, code, _ = run(base + ["-u", "alice:" + PASSWORD, url])  # no client certificate
    assert rc != 0 and code == "000"
    rc, code, _ = run(base + ["--cert", pki.rogue_client_cert, "--key", pki.rogue_client_key,
                              "-u", "alice:" + PASSWORD, url])
    assert rc != 0 and code == "000"
    # Python's client too, with HEAD and the landing page.
    context = client_context(pki, pki.client_cert, pki.client_key)
    head = request(exporter.port, "/metrics", context=context, method="HEAD",
                   headers=basic("alice", PASSWORD))
    assert head.status == 200 and head.body == b""
    page = request(exporter.port, "/", context=context, headers=basic("alice", PASSWORD))
    assert page.status == 200 and b"JK BMS exporter" in page.body
    assert request(exporter.port, "/", context=context).status == 401
    exporter.stop()


# --------------------------------------------------------------------------- service files


DEPLOY = REPO / "deploy"


def test_systemd_unit_verifies_and_is_sandboxed(tmp_path: Path) -> None:
    analyze = find_tool("systemd-analyze")
    unit = (DEPLOY / "jkbms-exporter.service").read_text()
    # verify insists that ExecStart's program exists: point it at the installed command.
    command = Path(sys.executable).parent / "jkbms-exporter"
    assert command.exists()
    assert "ExecStart=/usr/local/bin/jkbms-exporter serve " in unit
    local = tmp_path / "jkbms-exporter.service"
    local.write_text(unit.replace("/usr/local/bin/jkbms-exporter", str(command)))
    result = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    # The commented-out credentials for TLS are valid too once uncommented.
    assert unit.count("#LoadCredential=") == 4
    with_credentials = tmp_path / "with-credentials" / "jkbms-exporter.service"
    with_credentials.parent.mkdir()
    with_credentials.write_text(local.read_text().replace("#LoadCredential=", "LoadCredential="))
    result = subprocess.run([analyze, "verify", str(with_credentials)], capture_output=True,
                            text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    security = subprocess.run([analyze, "security", "--offline=yes", str(local)],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    assert match, security.stdout + security.stderr
    print("systemd-analyze security exposure: %s" % match.group(1))
    assert float(match.group(1)) <= 2.0, security.stdout

    directives: Dict[str, List[str]] = {}
    for line in unit.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            directives.setdefault(key, []).append(value)
    for key, value in {"DynamicUser": "yes", "SupplementaryGroups": "dialout",
                       "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                       "NoNewPrivileges": "yes", "Restart": "on-failure",
                       "RestartPreventExitStatus": "2",
                       "DevicePolicy": "closed",
                       "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6"}.items():
        assert directives.get(key) == [value], key
    assert "char-ttyUSB rw" in directives["DeviceAllow"]
    assert "char-ttyACM rw" in directives["DeviceAllow"]
    assert "PrivateDevices" not in directives  # it would hide the serial ports
    assert directives["EnvironmentFile"] == ["-/etc/default/jkbms-exporter"]
    assert "$JKBMS_EXPORTER_ARGS" in directives["ExecStart"][0]
    defaults = (DEPLOY / "jkbms-exporter.default").read_text()
    assert re.search(r'^JKBMS_EXPORTER_ARGS="--device house=/dev/jkbms-house ', defaults, re.M)


def test_default_file_arguments_are_accepted_by_the_cli() -> None:
    defaults = (DEPLOY / "jkbms-exporter.default").read_text()
    args = re.search(r'^JKBMS_EXPORTER_ARGS="([^"]*)"', defaults, re.M).group(1).split()
    from jkbms_exporter.cli import build_parser

    parsed = build_parser().parse_args(["serve", *args])
    assert parsed.device == ["house=/dev/jkbms-house"]


def test_udev_rule_is_well_formed() -> None:
    rules = (DEPLOY / "99-jkbms.rules").read_text()
    token = re.compile(r'^\s*([A-Z_]+(?:\{[^}]+\})?)\s*(==|!=|\+=|-=|:=|=)\s*"([^"]*)"\s*$')
    active = []
    for line in rules.splitlines():
        text = line.lstrip("#").strip() if line.startswith("#SUBSYSTEM") else line.strip()
        if not text or (text.startswith("#") and not line.startswith("#SUBSYSTEM")):
            continue
        pairs = [token.match(part) for part in text.split(", ")]
        assert all(pairs), line
        fields = {m.group(1): (m.group(2), m.group(3)) for m in pairs}  # type: ignore[union-attr]
        assert fields["SUBSYSTEM"] == ("==", "tty")
        assert fields["SYMLINK"][0] == "+=" and fields["SYMLINK"][1].startswith("jkbms-")
        assert fields["GROUP"] == ("=", "dialout") and fields["MODE"] == ("=", "0660")
        assert fields["TAG"] == ("+=", "systemd")
        if not line.startswith("#"):
            active.append(fields)
    assert len(active) == 1
    assert active[0]["SYMLINK"] == ("+=", "jkbms-house")
    assert active[0]["ENV{ID_SERIAL_SHORT}"][0] == "=="
