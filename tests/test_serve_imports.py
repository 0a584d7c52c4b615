"""A running ``serve`` never imports prometheus_client (issue 13: RSS and start-up time for an
HTTP client, a WSGI server and process collectors it does not use), nor PyYAML when no
configuration file is given, nor (without TLS or basic auth) ssl, http.server, http.client,
wsgiref, email, hashlib or hmac: ssl alone maps OpenSSL, about 4 MB."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import List

from conftest import free_port

#: Runs ``jkbms-exporter serve --simulate`` in this process's main thread (as the command
#: does), scrapes it every way a client can from a helper thread, then prints which of the
#: modules in question are loaded and stops the exporter with SIGTERM.
SERVE_AND_SCRAPE = textwrap.dedent("""
    import os, signal, socket, sys, threading, time
    from jkbms_exporter import cli

    PORT = int(sys.argv[1])
    EXTRA_ARGS = sys.argv[2:]
    HEAVY = {"ssl", "_ssl", "http.server", "http.client", "wsgiref", "wsgiref.simple_server",
             "email", "email.parser", "hashlib", "_hashlib", "hmac"}
    REQUESTS = [
        "GET /metrics HTTP/1.0\\r\\n\\r\\n",
        "GET /metrics HTTP/1.0\\r\\nAccept: application/openmetrics-text;version=1.0.0\\r\\n"
        "Accept-Encoding: gzip\\r\\n\\r\\n",
        "GET /metrics HTTP/1.0\\r\\nAccept: text/plain;version=1.0.0;escaping=dots\\r\\n\\r\\n",
        "GET /metrics?name[]=jkbms_up HTTP/1.0\\r\\n\\r\\n",
        "HEAD /metrics HTTP/1.0\\r\\n\\r\\n",
        "GET / HTTP/1.0\\r\\n\\r\\n",
        "GET /-/packs HTTP/1.0\\r\\n\\r\\n",
        "GET /-/ready HTTP/1.0\\r\\n\\r\\n",
    ]

    def ask(request):
        with socket.create_connection(("127.0.0.1", PORT), timeout=10) as sock:
            sock.sendall(request.encode())
            answer = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return answer
                answer += chunk

    def scrape_then_stop():
        deadline = time.monotonic() + 20
        while True:
            try:
                ask(REQUESTS[0])
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        for request in REQUESTS:
            answer = ask(request)
            status = answer.split(b"\\r\\n", 1)[0]
            print("answer", status.decode(), flush=True)
            for line in answer.split(b"\\r\\n\\r\\n", 1)[0].split(b"\\r\\n")[1:]:
                print("header", line.decode("latin-1"), flush=True)
        print("loaded", sorted(name for name in sys.modules
                               if name.split(".")[0] == "prometheus_client"), flush=True)
        print("yaml loaded", "yaml" in sys.modules, flush=True)
        print("heavy", sorted(name for name in sys.modules if name in HEAVY), flush=True)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=scrape_then_stop, daemon=True).start()
    sys.exit(cli.main(["serve", "--simulate", "--min-interval", "0", "--log.level", "error",
                       "--web.listen-address", "127.0.0.1:%d" % PORT] + EXTRA_ARGS))
""")


def serve_and_scrape(*extra_args: str, also_import: str = "") -> List[str]:
    """Lines :data:`SERVE_AND_SCRAPE` printed; ``also_import`` a module the script imports
    beside the command line (to show the checks can fail)."""
    script = SERVE_AND_SCRAPE
    if also_import:
        script = script.replace("from jkbms_exporter import cli",
                                "from jkbms_exporter import cli\nimport " + also_import)
    result = subprocess.run([sys.executable, "-c", script, str(free_port()), *extra_args],
                            capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_a_serving_and_scraped_exporter_has_not_imported_prometheus_client_nor_pyyaml() -> None:
    lines = serve_and_scrape()
    answers = [line for line in lines if line.startswith("answer ")]
    assert len(answers) == 8 and all(" 200 " in line for line in answers), lines
    assert "loaded []" in lines, lines
    # no --config.file nor --web.config.file: PyYAML is not needed either
    assert "yaml loaded False" in lines, lines
    # nor TLS, basic auth, an HTTP client or the standard library's HTTP/WSGI servers
    assert "heavy []" in lines, lines
    headers = [line for line in lines if line.startswith("header ")]
    assert headers.count("header Server: jkbms-exporter") == 8, lines
    assert sum(line.startswith("header Date: ") and line.endswith(" GMT")
               for line in headers) == 8, lines


def test_a_web_config_with_only_headers_loads_neither_ssl_nor_basic_auth(tmp_path) -> None:
    web_config = tmp_path / "web.yml"
    web_config.write_text("http_server_config:\n  headers:\n    X-Frame-Options: deny\n")
    lines = serve_and_scrape("--web.config.file", str(web_config))
    assert sum(" 200 " in line for line in lines if line.startswith("answer ")) == 8
    assert lines.count("header X-Frame-Options: deny") == 8, lines
    assert "heavy []" in lines, lines


def test_the_check_sees_ssl_and_http_client_when_they_are_imported() -> None:
    """The same check reports the heavy modules once something imports them: it can fail."""
    lines = serve_and_scrape(also_import="http.client")
    heavy = [line for line in lines if line.startswith("heavy ")]
    assert heavy and "'ssl'" in heavy[0] and "'http.client'" in heavy[0], lines


def test_the_check_sees_prometheus_client_when_it_is_imported() -> None:
    """The same check reports prometheus_client once something imports it: it can fail."""
    stdout = "\n".join(serve_and_scrape(also_import="prometheus_client"))
    assert "loaded []" not in stdout and "'prometheus_client'" in stdout
