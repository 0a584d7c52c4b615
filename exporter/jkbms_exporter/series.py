"""A pack's samples as exposition text lines, rendered where the data is (no I/O).

Each pack's samples become the lines prometheus_client would write for them (label names
sorted, values as Go formats floats, label values escaped) in that pack's port worker, as
soon as its reply is in; :mod:`.exposition` joins the finished parts under their families'
headers. Free of prometheus_client: the exporter serves without importing it.
"""

from __future__ import annotations

import threading
from typing import Dict, Iterable, List, Tuple

from .metrics import Group, MetricSpec

#: One sample: its spec, the values of the spec's own labels, the value.
SpecSample = Tuple[MetricSpec, Tuple[str, ...], float]


#: Formatted values: a float's shortest repr costs thousands of instructions, and a
#: BMS reports the same few hundred values (millivolts, settings, flags) scrape after
#: scrape. Bounded: cleared when full.
_formatted: Dict[float, str] = {}
_FORMATTED_LIMIT = 4096
_INF = float("inf")


def go_float(number: float) -> str:
    """``number`` as prometheus_client writes sample values (its take on Go's float
    formatting): ``+Inf``, ``-Inf``, ``NaN``; Python's shortest ``repr`` otherwise, except
    that a positive number with more than six digits before the point gets an exponent
    (``1234567.0`` → ``1.234567e+06``, ``1e+16`` stays)."""
    if number != number:
        return "NaN"
    if number == _INF:
        return "+Inf"
    if number == -_INF:
        return "-Inf"
    text = repr(number)
    whole, point, fraction = text.partition(".")
    if number > 0 and point and len(whole) > 6:
        digits = whole + fraction
        mantissa = (digits[0] + "." + digits[1:]).rstrip("0").rstrip(".")
        return "%se+%02d" % (mantissa, len(whole) - 1)
    return text


def format_value(value: float) -> str:
    """``value`` as the Prometheus text formats write it (:func:`go_float`), remembered."""
    number = float(value)
    text = _formatted.get(number)
    if text is None:
        text = go_float(number)
        if number:  # 0.0 == -0.0 (and NaN is never found again): not cached
            if len(_formatted) >= _FORMATTED_LIMIT:
                _formatted.clear()
            _formatted[number] = text
    return text


def escape_label_value(text: str) -> str:
    if "\\" in text or '"' in text or "\n" in text:
        return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return text


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

    def render_groups(self, groups: Iterable[Group]) -> Tuple[Tuple[MetricSpec, RenderedPart], ...]:
        """:meth:`render` for samples already in runs of one spec
        (:func:`~.metrics.reading_groups`): the same text, with no work per sample. A spec
        should have one run (two runs of one spec are two parts of its family: right, but
        each renders anew every time)."""
        last = self._last
        parts = []
        for spec, labels, values in groups:
            part = last.get(spec.name)
            if part is None or part.values != values or part.labels != labels:
                part = self._part(spec, labels, values)  # type: ignore[arg-type]
            parts.append((spec, part))
        return tuple(parts)

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


