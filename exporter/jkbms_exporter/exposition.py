"""Text exposition of the exporter's metric families, rendered where the data is.

prometheus_client formats every sample at scrape time, one family after another, after
the last pack has answered. Here each pack's samples become text lines in that pack's
port worker as soon as its reply is in (:meth:`.series.SeriesLabels.render`); the scrape
only joins finished text under the families' ``# HELP``/``# TYPE`` headers.

The bytes are the ones prometheus_client would write for the same families (label names
sorted, values as Go formats floats, label values escaped; the test suite compares both),
and the headers come from prometheus_client itself, so content negotiation (text 0.0.4,
text 1.0.0, OpenMetrics) and gzip work as with :func:`prometheus_client.make_wsgi_app`.
:class:`RenderedFamily` is still a :class:`~prometheus_client.Metric`: registries,
``generate_latest`` and ``name[]`` filtering see ordinary samples, built only if asked for.
"""

from __future__ import annotations

import gzip
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import parse_qs

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from .metrics import MetricSpec
from .series import RenderedPart

#: gzip level of scrape replies: the text is repetitive, level 6 is within a few per cent
#: of level 9 (prometheus_client's choice) in size at a fraction of the CPU.
GZIP_LEVEL = 6


def family_name(spec: MetricSpec) -> str:
    """The family (OpenMetrics) name: a counter's name without ``_total``."""
    name = spec.full_name
    return name[: -len("_total")] if spec.kind == "counter" else name


class RenderedFamily(Metric):
    """A metric family whose samples are already exposition text, one part per pack."""

    def __init__(self, spec: MetricSpec) -> None:  # noqa: super().__init__ would set samples
        self.name = family_name(spec)
        self.documentation = spec.help
        self.unit = ""
        self.type = spec.kind
        self.spec = spec
        self.parts: List[RenderedPart] = []

    @property  # type: ignore[override]
    def samples(self) -> List[Sample]:  # what prometheus_client's families would hold
        name = self.spec.full_name
        return [Sample(name, dict(zip(part.label_names, part.fixed + labels)), value)
                for part in self.parts for labels, value in zip(part.labels, part.values)]


def join_families(parts: Iterable[Tuple[MetricSpec, RenderedPart]],
                  families: Optional[Dict[str, RenderedFamily]] = None
                  ) -> Dict[str, RenderedFamily]:
    """Add rendered parts to their families (created in order of first appearance)."""
    families = {} if families is None else families
    for spec, part in parts:
        family = families.get(spec.name)
        if family is None:
            family = families[spec.name] = RenderedFamily(spec)
        family.parts.append(part)
    return families


# --------------------------------------------------------------------------- exposition


class _OneMetric:
    def __init__(self, metric: Metric) -> None:
        self.metric = metric

    def collect(self) -> Iterator[Metric]:
        yield self.metric


_EOF = "# EOF\n"
#: (content type, family name, type, help) → header lines; bounded, as clients choose
#: the content type's parameters.
_headers: Dict[Tuple[str, str, str, str], str] = {}
_HEADER_CACHE_LIMIT = 512


def _encode_one(encoder: Callable[[object], bytes], metric: Metric) -> str:
    text = encoder(_OneMetric(metric)).decode("utf-8")
    return text[: -len(_EOF)] if text.endswith(_EOF) else text


def _header(encoder: Callable[[object], bytes], content_type: str, family: RenderedFamily) -> str:
    key = (content_type, family.name, family.type, family.documentation)
    header = _headers.get(key)
    if header is None:
        empty = Metric(family.name, family.documentation, family.type)
        header = _encode_one(encoder, empty)
        if len(_headers) >= _HEADER_CACHE_LIMIT:
            _headers.clear()
        _headers[key] = header
    return header


def render_registry(registry: object, accept_header: Optional[str]) -> Tuple[bytes, str]:
    """The body and content type prometheus_client would answer for ``registry`` and the
    client's ``Accept`` header; families already rendered are joined, not re-formatted."""
    encoder, content_type = choose_encoder(accept_header or "")
    openmetrics = content_type.startswith("application/openmetrics-text")
    out: List[str] = []
    for metric in registry.collect():  # type: ignore[attr-defined]
        if isinstance(metric, RenderedFamily):
            out.append(_header(encoder, content_type, metric))
            out.extend(part.text for part in metric.parts)
        else:
            out.append(_encode_one(encoder, metric))
    if openmetrics:
        out.append(_EOF)
    return "".join(out).encode("utf-8"), content_type


def make_metrics_app(registry: object) -> Callable[[dict, Callable[..., object]], Sequence[bytes]]:
    """A WSGI app for ``GET`` of the metrics (the caller routes paths and methods)."""
    fallback = make_wsgi_app(registry)  # type: ignore[arg-type]

    def metrics_app(environ: dict, start_response: Callable[..., object]) -> Sequence[bytes]:
        query = environ.get("QUERY_STRING", "")
        if query and "name[]" in parse_qs(query):  # filtered scrapes: prometheus_client's way
            return fallback(environ, start_response)  # type: ignore[no-any-return]
        body, content_type = render_registry(registry, environ.get("HTTP_ACCEPT"))
        headers = [("Content-Type", content_type)]
        if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING") or ""):
            body = gzip.compress(body, compresslevel=GZIP_LEVEL)
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return [body]

    return metrics_app
