"""Text exposition of the exporter's metric families, rendered where the data is.

prometheus_client formats every sample at scrape time, one family after another, after
the last pack has answered. Here each pack's samples become text lines in that pack's
port worker as soon as its reply is in (:meth:`SeriesLabels.render`); the scrape only
joins finished text under the families' ``# HELP``/``# TYPE`` headers.

The bytes are the ones prometheus_client would write for the same families (label names
sorted, values as Go formats floats, label values escaped; the test suite compares both),
and the headers come from prometheus_client itself, so content negotiation (text 0.0.4,
text 1.0.0, OpenMetrics) and gzip work as with :func:`prometheus_client.make_wsgi_app`.
:class:`RenderedFamily` is still a :class:`~prometheus_client.Metric`: registries,
``generate_latest`` and ``name[]`` filtering see ordinary samples, built only if asked for.
"""

from __future__ import annotations

import gzip
import threading
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import parse_qs

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from .metrics import MetricSpec

#: One sample: its spec, the values of the spec's own labels, the value.
SpecSample = Tuple[MetricSpec, Tuple[str, ...], float]
#: gzip level of scrape replies: the text is repetitive, level 6 is within a few per cent
#: of level 9 (prometheus_client's choice) in size at a fraction of the CPU.
GZIP_LEVEL = 6


#: Formatted values: a float's shortest repr costs thousands of instructions, and a
#: BMS reports the same few hundred values (millivolts, settings, flags) scrape after
#: scrape. Bounded: cleared when full.
_formatted: Dict[float, str] = {}
_FORMATTED_LIMIT = 4096


def format_value(value: float) -> str:
    """``floatToGoString(value)``: ``repr`` as Go writes it (``+Inf``, ``NaN``, ``1.5e+06``)."""
    number = float(value)
    text = _formatted.get(number)
    if text is None:
        text = floatToGoString(number)
        if number:  # 0.0 == -0.0 (and NaN is never found again): not cached
            if len(_formatted) >= _FORMATTED_LIMIT:
                _formatted.clear()
            _formatted[number] = text
    return text


def escape_label_value(text: str) -> str:
    if "\\" in text or '"' in text or "\n" in text:
        return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return text


def family_name(spec: MetricSpec) -> str:
    """The family (OpenMetrics) name: a counter's name without ``_total``."""
    name = spec.full_name
    return name[: -len("_total")] if spec.kind == "counter" else name


class RenderedPart:
    """One pack's samples of one family: exposition lines, and the values they came from."""

    __slots__ = ("label_names", "fixed", "text", "labels", "values")

    def __init__(self, label_names: Tuple[str, ...], fixed: Tuple[str, ...], text: str,
                 labels: List[Tuple[str, ...]], values: List[float]) -> None:
        self.label_names = label_names
        #: values of the pack's own labels, the first of ``label_names``
        self.fixed = fixed
        self.text = text
        #: per sample: the values of the spec's own labels, and the value
        self.labels = labels
        self.values = values

    def samples(self, name: str) -> Iterator[Sample]:
        names, fixed = self.label_names, self.fixed
        for labels, value in zip(self.labels, self.values):
            yield Sample(name, dict(zip(names, fixed + labels)), value)


class SeriesLabels:
    """The labels one pack puts on its series: its own (``pack`` and extra labels, fixed)
    and each spec's (``cell``, ``sensor`` …); turns samples into exposition lines."""

    def __init__(self, names: Tuple[str, ...], values: Tuple[str, ...]) -> None:
        self.names = names
        self.values = values
        self._templates: Dict[str, Tuple[str, Tuple[int, ...], Tuple[str, ...]]] = {}
        self._lock = threading.Lock()
        #: spec name → the last part rendered for it: most of a BMS's values (settings,
        #: flags, alarms, identity) are the same scrape after scrape, and then so is the
        #: text. A part is only ever replaced whole, so concurrent renders stay consistent.
        self._last: Dict[str, RenderedPart] = {}

    def _template(self, spec: MetricSpec) -> Tuple[str, Tuple[int, ...], Tuple[str, ...]]:
        """``name{a="fixed",b="%s"} `` with labels sorted by name, the positions of the
        spec's labels in that order, and every label name in sample order."""
        with self._lock:
            template = self._templates.get(spec.name)
            if template is not None:
                return template
            names = self.names + spec.labels
            own = len(self.names)
            parts = []
            dynamic = []
            order = sorted(range(len(names)), key=names.__getitem__)
            formatted = len(names) > own  # a %-template, filled in per sample
            for index in order:
                if index < own:
                    value = escape_label_value(self.values[index])
                    if formatted:
                        value = value.replace("%", "%%")
                    parts.append('%s="%s"' % (names[index], value))
                else:
                    parts.append('%s="%%s"' % names[index])
                    dynamic.append(index - own)
            labels = "{%s}" % ",".join(parts) if parts else ""
            template = (spec.full_name + labels + " ", tuple(dynamic), names)
            self._templates[spec.name] = template
            return template

    def render(self, samples: Iterable[SpecSample]) -> Tuple[Tuple[MetricSpec, RenderedPart], ...]:
        """Exposition lines for ``samples``, grouped per spec in order of first appearance."""
        # per spec name (a str caches its hash; a frozen dataclass hashes every field):
        # (spec, label values, values)
        groups: Dict[str, Tuple[MetricSpec, List[Tuple[str, ...]], List[float]]] = {}
        for spec, labels, value in samples:
            group = groups.get(spec.name)
            if group is None:
                group = groups[spec.name] = (spec, [], [])
            group[1].append(labels)
            group[2].append(value)
        return tuple((spec, self._part(spec, labels, values))
                     for spec, labels, values in groups.values())

    def _part(self, spec: MetricSpec, labels: List[Tuple[str, ...]],
              values: List[float]) -> RenderedPart:
        last = self._last.get(spec.name)
        if last is not None and last.values == values and last.labels == labels:
            return last  # (0.0 == -0.0: a zero keeps the sign it was first written with)
        prefix, order, names = self._templates.get(spec.name) or self._template(spec)
        formatted = _formatted
        numbers = [float(value) for value in values]
        if not order:
            lines = [prefix + (formatted.get(n) or format_value(n)) + "\n" for n in numbers]
        elif order == (0,):
            lines = [prefix % escape_label_value(label[0])
                     + (formatted.get(n) or format_value(n)) + "\n"
                     for label, n in zip(labels, numbers)]
        else:
            lines = [prefix % tuple(escape_label_value(label[i]) for i in order)
                     + (formatted.get(n) or format_value(n)) + "\n"
                     for label, n in zip(labels, numbers)]
        part = RenderedPart(names, self.values, "".join(lines), labels, numbers)
        self._last[spec.name] = part
        return part


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
        return [sample for part in self.parts for sample in part.samples(name)]


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
