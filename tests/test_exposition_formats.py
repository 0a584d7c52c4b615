"""Our exposition against prometheus_client's own: content negotiation for any ``Accept``
header, gzip for any ``Accept-Encoding``, float formatting, name escapings, ``name[]``."""

from __future__ import annotations

import gzip
import itertools
import math
import wsgiref.util
from typing import List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import choose_encoder
from prometheus_client.exposition import gzip_accepted as reference_gzip_accepted
from prometheus_client.openmetrics import exposition as openmetrics_exposition
from prometheus_client.utils import floatToGoString

from jkbms_exporter.exposition import gzip_accepted, make_metrics_app, negotiate, render_registry
from jkbms_exporter.pack import JkSerialProtocol, Pack
from jkbms_exporter.series import go_float

from test_exposition import (
    AWKWARD, FrameTransport, ReferenceCollector, frames, registries, without_build_info,
)

MEDIA_TYPES = ["application/openmetrics-text", "text/plain", "text/html", "*/*", "application/*",
               " application/openmetrics-text ", "APPLICATION/OPENMETRICS-TEXT", "text/plain "]
PARAMETERS = ["", "version=1.0.0", "version=0.0.1", "version=0.0.4", "version=2.0.0",
              "version=1", "version=1.0", "version=0.9.9", "version=10.0.0", " version=1.0.0",
              "version = 1.0.0", "version=", "escaping=allow-utf-8", "escaping=underscores",
              "escaping=dots", "escaping=values", "escaping=bogus", "q=0.5", "charset=utf-8",
              "version=1.0.0=x"]


def reference_negotiation(accept: Optional[str]) -> Tuple[bool, str]:
    """(OpenMetrics?, Content-Type) as prometheus_client chooses them."""
    encoder, content_type = choose_encoder(accept)  # type: ignore[arg-type]
    function = getattr(encoder, "func", encoder)
    return function is openmetrics_exposition.generate_latest, content_type


def assert_negotiates_as_prometheus_client(accept: Optional[str]) -> None:
    try:
        expected = reference_negotiation(accept)
    except TypeError:  # it compares a word with a number: the scrape would fail
        fmt = negotiate(accept)  # ours skips that entry
        assert fmt.content_type.startswith(("text/plain", "application/openmetrics-text"))
        return
    fmt = negotiate(accept)
    assert (fmt.openmetrics, fmt.content_type) == expected, accept


def accept_entries() -> List[str]:
    entries = []
    for media_type in MEDIA_TYPES:
        for first, second in itertools.combinations(PARAMETERS, 2):
            entries.append(";".join(part for part in (media_type, first, second) if part))
    return entries


def test_negotiation_is_prometheus_clients_for_single_entries() -> None:
    entries = accept_entries()
    assert len(entries) > 1000
    for accept in [None, "", ",", ";", "garbage", *entries]:
        assert_negotiates_as_prometheus_client(accept)


def test_negotiation_is_prometheus_clients_for_lists_of_entries() -> None:
    entries = accept_entries()[::7]
    for first, second in itertools.product(entries[::3], entries[1::5]):
        assert_negotiates_as_prometheus_client(first + "," + second)
    prometheus_2 = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
    prometheus_3 = ("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
                    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;"
                    "escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1")
    for accept in (prometheus_2, prometheus_3, "text/plain", "*/*", "text/plain;version=1.0.0"):
        assert_negotiates_as_prometheus_client(accept)
    assert negotiate(prometheus_2).content_type == \
        "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores"


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(MEDIA_TYPES + ["text/plain;version=1.0.0"]),
                          st.lists(st.sampled_from(PARAMETERS) | st.text(";=., 01a", max_size=8),
                                   max_size=3)), max_size=4))
def test_negotiation_is_prometheus_clients_for_generated_headers(
        entries: List[Tuple[str, List[str]]]) -> None:
    assert_negotiates_as_prometheus_client(
        ",".join(";".join([media_type] + parameters) for media_type, parameters in entries))


def test_a_version_prometheus_client_cannot_compare_is_skipped() -> None:
    accept = "application/openmetrics-text;version=1.x,text/plain;version=1.0.0"
    with pytest.raises(TypeError):
        choose_encoder(accept)
    assert negotiate(accept).content_type == \
        "text/plain; version=1.0.0; charset=utf-8; escaping=underscores"


@pytest.mark.parametrize("accept_encoding", [
    None, "", "gzip", "GZIP", " gzip ", "gzip;q=0", "deflate, gzip;q=1.0", "x-gzip", "br",
    "deflate,br", "gzip, deflate, br", "*", "identity", ",gzip,", "gzip2", "Gzip ;q=0.5"])
def test_gzip_is_accepted_as_prometheus_client_accepts_it(accept_encoding: Optional[str]) -> None:
    assert gzip_accepted(accept_encoding) == reference_gzip_accepted(accept_encoding)  # type: ignore


@given(st.text(" ,;=qgzipGZIPdeflate0.1", max_size=24))
def test_gzip_acceptance_for_generated_headers(accept_encoding: str) -> None:
    assert gzip_accepted(accept_encoding) == reference_gzip_accepted(accept_encoding)


VALUES = [0.0, -0.0, 1.0, -1.0, 0.1, -0.1, 1e-300, 5e-324, -5e-324, 1e-05, 0.0001, 123456.0,
          999999.0, 1000000.0, 1234567.0, 1234567.5, -1234567.0, 10000000.5, 1e15, 1e16, 1e17,
          1.7976931348623157e308, -1.7976931348623157e308, 2.0 ** 53, 2.0 ** 53 + 2, 3.3, 3.299,
          1 / 3, 12345678901234.5, math.inf, -math.inf, math.nan, 65535.0, 4294967295.0]


@pytest.mark.parametrize("value", VALUES)
def test_go_float_is_prometheus_clients(value: float) -> None:
    assert go_float(value) == floatToGoString(value)


@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-2**70, 2**70).map(float)
       | st.floats(min_value=1e5, max_value=1e17))
def test_go_float_is_prometheus_clients_for_generated_values(value: float) -> None:
    assert go_float(value) == floatToGoString(value)


# ------------------------------------------------------------------------------- bodies

@pytest.fixture(scope="module")
def three_packs():
    packs = [
        Pack("house", FrameTransport(frames(1)), JkSerialProtocol(), labels=(("site", AWKWARD),)),
        Pack("shed", FrameTransport(frames(1, cells=4)), JkSerialProtocol()),
        Pack("gone", FrameTransport([b"NW junk"]), JkSerialProtocol(retries=0)),
    ]
    poller, ours, reference = registries(packs)
    poller.poll()
    # prometheus_client's name filter needs the collector's names: asked of the families
    described = CollectorRegistry(auto_describe=True)
    described.register(ReferenceCollector(poller))
    yield ours, described
    poller.close()


@pytest.mark.parametrize("accept", [
    "text/plain;version=1.0.0",
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "text/plain;version=1.0.0;escaping=dots",
    "text/plain;version=1.0.0;escaping=values",
    "application/openmetrics-text",
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
    "application/openmetrics-text;version=2.0.0",
    "application/openmetrics-text;version=1.0.0;escaping=dots",
])
def test_bodies_are_prometheus_clients_in_every_format_and_escaping(three_packs, accept) -> None:
    ours, reference = three_packs
    encoder, content_type = choose_encoder(accept)
    body, our_content_type = render_registry(ours, accept)
    assert our_content_type == content_type
    expected = without_build_info(encoder(reference).decode())
    assert without_build_info(body.decode().replace("exporter__build__info",
                                                    "exporter_build_info")) == expected
    if "dots" in accept:
        assert "jkbms__cell__voltage__volts{" in expected  # the escaping did change names


def wsgi_get(app, query: str = "", **headers: str) -> Tuple[str, List[Tuple[str, str]], bytes]:
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "QUERY_STRING": query}
    environ.update(("HTTP_" + name.upper().replace("-", "_"), value)
                   for name, value in headers.items())
    wsgiref.util.setup_testing_defaults(environ)
    answer: List = []
    body = b"".join(app(environ, lambda status, headers: answer.extend((status, headers))))
    return answer[0], answer[1], body


@pytest.mark.parametrize("query", [
    "name[]=jkbms_up", "name[]=jkbms_up&name[]=jkbms_cells",
    "name[]=jkbms_read_errors", "name[]=jkbms_read_errors_total", "name[]=nothing",
    "name[]=", "other=1", "name[]=jkbms_cell_voltage_volts&name[]=jkbms_up&x=y",
])
@pytest.mark.parametrize("accept", [None, "application/openmetrics-text"])
def test_name_filters_and_gzip_answer_as_prometheus_clients_app(
        three_packs, query: str, accept: Optional[str]) -> None:
    ours, reference = three_packs
    headers = {"Accept-Encoding": "gzip"}
    if accept:
        headers["Accept"] = accept
    status, our_headers, body = wsgi_get(make_metrics_app(ours), query, **headers)
    reference_status, reference_headers, reference_body = wsgi_get(
        make_wsgi_app(reference), query, **headers)
    assert status == reference_status == "200 OK"
    assert our_headers == reference_headers
    assert dict(our_headers)["Content-Encoding"] == "gzip"
    assert without_build_info(gzip.decompress(body).decode()) == \
        without_build_info(gzip.decompress(reference_body).decode())
