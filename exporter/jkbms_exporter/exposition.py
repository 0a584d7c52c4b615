"""Text exposition of the exporter's metric families, rendered where the data is.

Each pack's samples become text lines in that pack's port worker as soon as its reply is
in (:meth:`.series.SeriesLabels.render`); a scrape only joins finished text under the
families' ``# HELP``/``# TYPE`` headers (made once per family and format), and gzips it
once.

The serving path does not import prometheus_client (its package pulls in an HTTP client,
a WSGI server and process collectors: about 12 MB of a 30 MB exporter). What it would do
is done here, and the test suite compares the two, byte for byte:

* :func:`negotiate` picks the format and ``Content-Type`` as its ``choose_encoder`` does
  (text 0.0.4, text 1.0.0 with a name escaping, OpenMetrics 1.0.0 and later versions);
* the bodies are the ones its ``generate_latest`` functions write (a counter's HELP/TYPE
  name has ``_total`` in the text formats, not in OpenMetrics; OpenMetrics ends with
  ``# EOF``); ``?name[]=`` keeps the families whose samples have one of the names;
* gzip when the client's ``Accept-Encoding`` lists it.

:class:`RenderedFamily` also looks like a prometheus_client metric family (``name``,
``type``, ``documentation``, ``unit``, ``samples``), so a collector yielding them can still
be registered in a ``prometheus_client.CollectorRegistry`` (the tests do).
"""

from __future__ import annotations

import gzip
from typing import (
    Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Protocol, Sequence, Tuple,
    Union,
)
from urllib.parse import parse_qs

from .metrics import MetricSpec
from .series import RenderedPart, escape_label_value, format_value

#: gzip level of scrape replies. The text is repetitive: level 1 compresses 16 packs'
#: 101 kB to 10.3 kB in a ninth of level 6's CPU (8.0 kB) and a thirtieth of level 9's
#: (prometheus_client's choice, 7.4 kB); one pack's 11 kB to 2.7 kB (2.5 kB at level 6).
#: On a Raspberry Pi the CPU is what counts, not two kilobytes on the LAN.
GZIP_LEVEL = 1

TEXT_0_0_4 = "text/plain; version=0.0.4; charset=utf-8"
TEXT_1_0_0 = "text/plain; version=1.0.0; charset=utf-8"
OPENMETRICS_1_0_0 = "application/openmetrics-text; version=1.0.0; charset=utf-8"
EOF = "# EOF\n"

#: Name escapings a client may ask for (``escaping=`` in ``Accept``); anything else is
#: ``underscores``. Our metric and label names are all legacy-valid: only ``dots``
#: changes them (every ``_`` doubled).
ALLOW_UTF8, UNDERSCORES, DOTS, VALUES = "allow-utf-8", "underscores", "dots", "values"
_ESCAPINGS = (ALLOW_UTF8, UNDERSCORES, DOTS, VALUES)


class Format(NamedTuple):
    """What a scrape is answered in."""

    openmetrics: bool
    escaping: str
    content_type: str


TEXT = Format(False, UNDERSCORES, TEXT_0_0_4)
OPENMETRICS = Format(True, UNDERSCORES, OPENMETRICS_1_0_0)


def _parameter(tokens: Sequence[str], name: str) -> str:
    for token in tokens:
        if "=" in token:
            key, value = token.strip().split("=", 1)
            if key == name:
                return value
    return ""


def _escaping(tokens: Sequence[str]) -> str:
    value = _parameter(tokens, "escaping")
    return value if value in _ESCAPINGS else UNDERSCORES


def _at_least_1_0_0(version: str) -> bool:
    """``version >= 1.0.0`` as prometheus_client compares versions (dot-separated parts,
    numbers where they parse). Where it would compare a word with a number (and fail the
    scrape with a TypeError), the entry is skipped instead."""
    parts: List[Union[int, str]] = []
    for part in version.split("."):
        try:
            parts.append(int(part))
        except ValueError:
            parts.append(part)
    try:
        return tuple(parts) >= (1, 0, 0)
    except TypeError:
        return False


def negotiate(accept: Optional[str]) -> Format:
    """The format for the client's ``Accept`` header: the first OpenMetrics entry with no
    version or a version >= 1.0.0, or text/plain with a version >= 1.0.0; else text 0.0.4."""
    for accepted in (accept or "").split(","):
        tokens = accepted.split(";")
        media_type = tokens[0].strip()
        if media_type == "application/openmetrics-text":
            version = _parameter(tokens, "version")
            if not version:
                return OPENMETRICS
            if _at_least_1_0_0(version):
                escaping = _escaping(tokens)
                return Format(True, escaping, "application/openmetrics-text; version=%s; "
                              "charset=utf-8; escaping=%s" % (version, escaping))
        elif media_type == "text/plain":
            version = _parameter(tokens, "version")
            if version and _at_least_1_0_0(version):
                escaping = _escaping(tokens)
                return Format(False, escaping, TEXT_1_0_0 + "; escaping=" + escaping)
    return TEXT


def gzip_accepted(accept_encoding: Optional[str]) -> bool:
    return any(coding.split(";")[0].strip().lower() == "gzip"
               for coding in (accept_encoding or "").split(","))


def _dots(name: str) -> str:
    """A legacy-valid name in the ``dots`` escaping: every ``_`` doubled."""
    return name.replace("_", "__")


# ---------------------------------------------------------------------------- families


def family_name(spec: MetricSpec) -> str:
    """The family (OpenMetrics) name: a counter's name without ``_total``."""
    name = spec.full_name
    return name[: -len("_total")] if spec.kind == "counter" else name


class RenderedFamily:
    """A metric family whose samples are already exposition text, one part per pack."""

    __slots__ = ("spec", "parts")

    def __init__(self, spec: MetricSpec) -> None:
        self.spec = spec
        self.parts: List[RenderedPart] = []

    # What prometheus_client reads of a family, for its own exposition (only it asks).

    @property
    def name(self) -> str:
        return family_name(self.spec)

    @property
    def documentation(self) -> str:
        return self.spec.help

    @property
    def type(self) -> str:
        return self.spec.kind

    @property
    def unit(self) -> str:
        return ""

    @property
    def samples(self) -> list:
        from prometheus_client.samples import Sample  # imported already: it is asking

        name = self.spec.full_name
        return [Sample(name, dict(zip(part.label_names, part.fixed + labels)), value)
                for part in self.parts for labels, value in zip(part.labels, part.values)]

    def _restricted_metric(self, names: Iterable[str]) -> Optional["RenderedFamily"]:
        """prometheus_client's ``restricted_registry`` hook: the family if its samples'
        name is asked for (all of a family's samples have one name)."""
        return self if self.spec.full_name in names else None


def join_families(parts: Iterable[Tuple[MetricSpec, RenderedPart]],
                  families: Optional[Dict[str, RenderedFamily]] = None
                  ) -> Dict[str, RenderedFamily]:
    """Add rendered parts to their families (created in order of first appearance)."""
    families = {} if families is None else families
    for spec, part in parts:
        try:
            families[spec.name].parts.append(part)
        except KeyError:
            family = families[spec.name] = RenderedFamily(spec)
            family.parts.append(part)
    return families


# -------------------------------------------------------------------------- exposition

#: spec name → (spec, {(openmetrics, escaping): header}): a dict look-up by a string and an
#: identity check per family and scrape.
_headers: Dict[str, Tuple[MetricSpec, Dict[Tuple[bool, str], str]]] = {}


def _make_header(spec: MetricSpec, openmetrics: bool, escaping: str) -> str:
    help_text = spec.help.replace("\\", r"\\").replace("\n", r"\n")
    if openmetrics:
        name = family_name(spec)
        help_text = help_text.replace('"', r"\"")
    else:
        name = spec.full_name
    if escaping == DOTS:
        name = _dots(name)
    return "# HELP %s %s\n# TYPE %s %s\n" % (name, help_text, name, spec.kind)


def header(spec: MetricSpec, fmt: Format) -> str:
    """The family's ``# HELP`` and ``# TYPE`` lines in ``fmt``."""
    entry = _headers.get(spec.name)
    if entry is None or entry[0] is not spec:
        entry = _headers[spec.name] = (spec, {})
    key = (fmt.openmetrics, fmt.escaping)
    text = entry[1].get(key)
    if text is None:
        text = entry[1][key] = _make_header(spec, fmt.openmetrics, fmt.escaping)
    return text


def _dots_lines(spec: MetricSpec, part: RenderedPart) -> str:
    """A part's sample lines with names in the ``dots`` escaping (rare: rendered anew)."""
    names = part.label_names
    order = sorted(range(len(names)), key=names.__getitem__)
    escaped = [_dots(names[index]) for index in order]
    name = _dots(spec.full_name)
    lines = []
    for labels, value in zip(part.labels, part.values):
        values = part.fixed + labels
        pairs = ",".join('%s="%s"' % (label, escape_label_value(values[index]))
                         for label, index in zip(escaped, order))
        lines.append("%s%s %s\n" % (name, "{%s}" % pairs if pairs else "", format_value(value)))
    return "".join(lines)


def render(families: Iterable[RenderedFamily], fmt: Format) -> bytes:
    """The exposition of ``families`` in ``fmt``: headers and the parts' finished text."""
    out: List[str] = []
    append, extend = out.append, out.extend
    for family in families:
        spec = family.spec
        append(header(spec, fmt))
        if fmt.escaping == DOTS:
            extend(_dots_lines(spec, part) for part in family.parts)
        else:
            extend([part.text for part in family.parts])
    if fmt.openmetrics:
        append(EOF)
    return "".join(out).encode("utf-8")


class FamilySource(Protocol):
    """What serves the families: a collector (or a prometheus_client registry holding one)."""

    def collect(self) -> Iterable[RenderedFamily]: ...


def render_registry(source: FamilySource, accept_header: Optional[str],
                    names: Optional[Sequence[str]] = None) -> Tuple[bytes, str]:
    """The body and content type for ``source``'s families and the client's ``Accept``
    header; ``names``, when given, keeps the families whose samples have one of them."""
    fmt = negotiate(accept_header)
    families: Iterator[RenderedFamily] = iter(source.collect())
    if names is not None:
        wanted = frozenset(names)
        families = (family for family in families if family.spec.full_name in wanted)
    return render(families, fmt), fmt.content_type


WsgiApp = Callable[[dict, Callable[..., object]], Sequence[bytes]]


def make_metrics_app(source: FamilySource) -> WsgiApp:
    """A WSGI app for ``GET`` of the metrics (the caller routes paths and methods)."""

    def metrics_app(environ: dict, start_response: Callable[..., object]) -> Sequence[bytes]:
        query = environ.get("QUERY_STRING", "")
        names = parse_qs(query).get("name[]") if query else None
        body, content_type = render_registry(source, environ.get("HTTP_ACCEPT"), names)
        headers = [("Content-Type", content_type)]
        if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING")):
            body = gzip.compress(body, compresslevel=GZIP_LEVEL)
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return [body]

    return metrics_app
