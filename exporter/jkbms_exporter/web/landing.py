"""The landing page ``/``: what a person sees first, one card per pack, refreshing itself.

The page is rendered here, on the server, with live values: when the last read is older
than the page's refresh period it reads the packs on demand, through the collector's
:meth:`~jkbms_exporter.collector.Poller.poll` (single flight, never more often than
``--min-interval``), so a first visit right after the quick start shows values, not
"not read yet". A small script then fetches the pack cards again (``/-/packs``) every
refresh period; however many pages are open, they cause at most one read per period.

Cells are coloured by how far each is from the pack's mean on a fixed millivolt scale
(:data:`DEVIATION_BANDS_MV`), so a 15 mV spread never looks like a 150 mV one.
"""

from __future__ import annotations

import html
import time
from typing import Any, List, Mapping, Optional, Sequence

from .. import __version__
from ..collector import PackResult, Poller, Snapshot
from ..pack import Pack
from ..reading import NOT_REPORTED_KEY, READING_AGE_KEY, Reading, cell_label

#: The page refreshes its pack cards this often (or every ``--min-interval``, if longer).
REFRESH_SECONDS = 5.0
#: Upper bounds (mV, absolute deviation from the pack mean) of the cell colour bands
#: d0…d3; beyond the last one a cell is in band d4.
DEVIATION_BANDS_MV = (5.0, 15.0, 30.0, 50.0)
#: What each read-error reason means, in a few words.
_REASON_WORDS = {
    "timeout": "no answer",
    "checksum": "garbled reply (checksum)",
    "malformed": "garbled reply",
    "io": "port error",
}
#: Longest error text shown in full; the whole text is in the tooltip.
_SHORT_ERROR = 80


def refresh_seconds(poller: Poller) -> float:
    return max(REFRESH_SECONDS, poller.min_interval)


def current_snapshot(poller: Poller) -> Snapshot:
    """The last read if younger than the refresh period, else a read now (on demand)."""
    snapshot = poller.snapshot
    if snapshot is None or time.monotonic() - snapshot.finished >= refresh_seconds(poller):
        snapshot = poller.poll()
    return snapshot


def bus_address(pack: Pack) -> Optional[int]:
    """The JK-PB bus address of a pack (directly, or as the bus candidate of ``auto``)."""
    protocol: Any = pack.protocol
    for candidate in [protocol] + list(getattr(protocol, "candidates", ())):
        address = getattr(candidate, "address", None)
        if isinstance(address, int):
            return address
    return None


def deviation_band(deviation_mv: float) -> int:
    """0…4: which colour band a cell ``deviation_mv`` away from the mean falls in."""
    magnitude = abs(deviation_mv)
    for band, limit in enumerate(DEVIATION_BANDS_MV):
        if magnitude < limit:
            return band
    return len(DEVIATION_BANDS_MV)


def short_error(result: PackResult) -> str:
    """The error without the port (shown beside it anyway), cut to a line."""
    text = " ".join(result.error.replace(" from %s" % result.port, "")
                    .replace(result.port, "the port").split())
    if len(text) > _SHORT_ERROR:
        text = text[: _SHORT_ERROR - 1].rstrip() + "…"
    return text


def _e(value: object) -> str:
    return html.escape(str(value))


def _age(seconds: Optional[float]) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return "%.0f s ago" % seconds
    if seconds < 7200:
        return "%.0f min ago" % (seconds / 60)
    return "%.1f h ago" % (seconds / 3600)


def _cells_html(cells: Sequence[float]) -> str:
    mean = sum(cells) / len(cells)
    spans = []
    for index, volts in enumerate(cells, start=1):
        deviation = (volts - mean) * 1000
        side = "hi" if deviation > 0 else "lo"
        spans.append(
            '<span class="cell d%d %s" data-mv="%+.1f" title="cell %s: %.3f V, %+d mV from '
            'the mean"><i>%s</i>%.3f</span>'
            % (deviation_band(deviation), side, deviation, cell_label(index), volts,
               round(deviation), cell_label(index), volts))
    return (
        '<div class="cells">%s</div><p class="cellsum">%d cells, mean %.3f V, spread %.0f mV '
        "(min %.3f V, max %.3f V)</p>"
        % ("".join(spans), len(cells), mean, (max(cells) - min(cells)) * 1000,
           min(cells), max(cells))
    )


def _values_html(reading: Reading) -> str:
    missing = set(reading.extra.get(NOT_REPORTED_KEY, ()))  # type: ignore[arg-type]

    def value(field: str, text: str) -> str:
        return '<span class="na">not reported</span>' if field in missing else text

    current = reading.current_amperes
    direction = "charging" if current > 0 else "discharging" if current < 0 else "idle"
    temperatures = " · ".join(
        "%s %.0f °C" % (_e(sensor), celsius)
        for sensor, celsius in reading.temperatures_celsius.items()) or "none"
    alarms = reading.active_alarms()
    alarm_text = (
        '<span class="alarm">%s</span>' % _e(", ".join(a.replace("_", " ") for a in alarms))
        if alarms else '<span class="ok">none</span>')
    items = [
        ("SOC", value("state_of_charge_ratio", "%.0f %%" % (reading.state_of_charge_ratio * 100))),
        ("Voltage", "%.2f V" % reading.pack_voltage_volts),
        ("Current", value("current_amperes", "%+.2f A %s (%+.0f W)"
                          % (current, direction, reading.power_watts))),
        ("Temperatures", value("temperatures_celsius", temperatures)),
        ("Alarms", value("alarm_bitmask", alarm_text)),
    ]
    rows = "".join('<div class="kv" data-key="%s"><b>%s</b> %s</div>' % (k.lower(), k, v)
                   for k, v in items)
    cells = _cells_html(reading.cell_voltages_volts) if reading.cell_voltages_volts else ""
    return '<div class="values">%s</div>%s' % (rows, cells)


def _state_html(result: Optional[PackResult]) -> str:
    if result is None:
        return '<span class="unk">not read yet</span>'
    if not result.up:
        return '<span class="down">down</span>: <span class="err">%s</span>' % _e(
            _REASON_WORDS.get(result.reason, result.reason))
    state = '<span class="up">up</span>'
    extra: Mapping[str, object] = result.reading.extra if result.reading is not None else {}
    if extra.get("source") == "listen":
        state += " (listen-only: another master polls this bus)"
    if extra.get(READING_AGE_KEY) is not None:
        state += ", values %.1f s old" % float(extra[READING_AGE_KEY])  # type: ignore[arg-type]
    return state


def pack_cards(poller: Poller, snapshot: Optional[Snapshot]) -> str:
    """The HTML of every pack's card (what ``/-/packs`` returns and the page shows)."""
    results = {r.name: r for r in snapshot.results} if snapshot else {}
    now = time.time()
    cards: List[str] = []
    for pack in poller.packs:
        status = poller.status[pack.name]
        result = results.get(pack.name)
        address = bus_address(pack)
        port = "<code>%s</code>" % _e(pack.port)
        if address is not None:
            port += ' <span class="addr">address %d</span>' % address
        age = None if status.last_success_time is None else now - status.last_success_time
        reading = result.reading if result is not None and result.up else status.last_reading
        body = ""
        if reading is not None:
            stale = result is None or not result.up
            body = ('<p class="stalenote">last good values:</p>' if stale else "") + \
                _values_html(reading)
            if stale:
                body = '<div class="stale">%s</div>' % body
        if result is not None and not result.up:
            body = '<p class="errtext" title="%s">%s</p>%s' % (
                _e(result.error), _e(short_error(result)), body)
        cards.append(
            '<section class="pack" data-pack="%s" data-state="%s"><h2>%s %s</h2>'
            '<p class="meta">Port %s · last good read <span class="age">%s</span></p>%s</section>'
            % (_e(pack.name), "unknown" if result is None else "up" if result.up else "down",
               _e(pack.name), _state_html(result), port, _age(age), body))
    return "\n".join(cards)


_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#1f2328;max-width:70em}
h1{font-size:1.5em;margin:0 0 .2em}h2{font-size:1.15em;margin:0 0 .3em}
.pack{border:1px solid #d0d7de;border-radius:6px;padding:.7em 1em;margin:1em 0}
.meta,.cellsum,.legend,#updated{color:#57606a;font-size:.9em;margin:.2em 0}
.up{color:#1a7f37;font-weight:bold}.down{color:#cf222e;font-weight:bold}.unk{color:#888}
.err{color:#cf222e}.errtext{color:#cf222e;margin:.2em 0;font-size:.95em}.alarm{color:#cf222e;font-weight:bold}.ok{color:#1a7f37}.na{color:#888}
.values{display:flex;flex-wrap:wrap;gap:.3em 1.6em;margin:.4em 0}.kv b{color:#57606a;font-weight:normal}
.stale{opacity:.55}.stalenote{margin:.3em 0 0;font-size:.9em}
.cells{display:flex;flex-wrap:wrap;gap:4px;margin:.5em 0 .2em}
.cell{display:inline-block;min-width:4.2em;padding:.2em .3em;border-radius:4px;text-align:center;
font-variant-numeric:tabular-nums;border:1px solid #d0d7de}
.cell i{display:block;font-style:normal;font-size:.7em;opacity:.75}
.d0{background:#e6f4ea}.hi.d1{background:#fdebd3}.hi.d2{background:#fbc48a}
.hi.d3{background:#f0883e}.hi.d4{background:#cf222e;color:#fff}.lo.d1{background:#ddeafc}
.lo.d2{background:#a5c8f5}.lo.d3{background:#5a93e0;color:#fff}.lo.d4{background:#1f4fb0;color:#fff}
.legend span{display:inline-block;width:1.1em;height:.9em;vertical-align:middle;
border:1px solid #d0d7de;border-radius:2px}"""

_SCRIPT = """(function () {
  var packs = document.getElementById("packs"), note = document.getElementById("updated");
  var every = parseFloat(packs.getAttribute("data-refresh")) * 1000, count = 0;
  // without the user:password@ a URL may carry (fetch refuses those; the browser still
  // sends the credentials it has for this origin)
  var url = new URL("-/packs", location.origin + location.pathname).href;
  function stamp(text) { note.textContent = text; }
  function refresh() {
    fetch(url, {cache: "no-store", credentials: "same-origin"}).then(function (r) {
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.text();
    }).then(function (text) {
      packs.innerHTML = text;
      count += 1;
      packs.setAttribute("data-refreshes", String(count));
      stamp("Updated " + new Date().toLocaleTimeString() + "; refreshes every " +
            every / 1000 + " s.");
    }).catch(function (error) {
      stamp("Could not refresh (" + error.message + "); showing the values from before.");
    }).then(function () { setTimeout(refresh, every); });
  }
  stamp("Refreshes every " + every / 1000 + " s.");
  setTimeout(refresh, every);
})();"""


def landing_page(poller: Poller, telemetry_path: str, snapshot: Optional[Snapshot]) -> str:
    limits = ("",) + tuple("%g" % limit for limit in DEVIATION_BANDS_MV)
    legend = " · ".join(
        '%s %s' % (
            '<span class="d0"></span>' if band == 0 else
            '<span class="lo d%d"></span><span class="hi d%d"></span>' % (band, band), ("under %s mV" % limits[1]) if band == 0 else
            ("%s mV and more" % limits[band]) if band == len(DEVIATION_BANDS_MV) else
            "%s–%s" % (limits[band], limits[band + 1]))
        for band in range(len(DEVIATION_BANDS_MV) + 1))
    return """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>JK BMS exporter</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>%s</style></head>
<body><h1>JK BMS exporter</h1>
<p class="meta">Version %s. Metrics: <a href="%s">%s</a>. Health: <a href="-/healthy">-/healthy</a>,
<a href="-/ready">-/ready</a>.</p>
<p id="updated"></p>
<div id="packs" data-refresh="%g">
%s
</div>
<p class="legend">Cells: distance from the pack's mean (blue below, red above): %s.</p>
<noscript><p class="meta">Reload the page for new values.</p></noscript>
<script>%s</script>
</body></html>
""" % (
        _STYLE,
        _e(__version__),
        _e(telemetry_path),
        _e(telemetry_path),
        refresh_seconds(poller),
        pack_cards(poller, snapshot),
        legend,
        _SCRIPT,
    )
