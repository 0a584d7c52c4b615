"""Many sites when things go wrong: wrong credentials at a site, the central store down.

Each site is an exporter (``serve --simulate``) and vmagent with the shipped edge flags
and vmagent.yml (1 s scrape interval):

* ``alpha`` writes through vmauth (https, its own user) into VictoriaMetrics, as the
  central compose file does. The store is stopped for 60 s while alpha keeps scraping and
  started again on the same data directory: alpha's raw samples (``/api/v1/export``, no
  query lookback to hide a gap) are counted, one per second, none missing.
* ``beta`` starts with a wrong password: nothing is accepted, beta's vmagent keeps what it
  scraped; the password file is fixed (vmagent re-reads it every second) and every sample
  since beta's start arrives. Beta writes to a store guarded by its own flags (``-tls``,
  ``-httpAuth.*``), because Debian's vmauth 1.79.5 answers wrong credentials with 400,
  which vmagent takes for a malformed block and DROPS (vmauth answers 401 since 1.91, the
  compose file pins 1.122; vmagent retries a 401 until it is accepted).
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import Dict, Iterator, List, Optional

import pytest

from fleet_stack import Certificates, Site, VictoriaMetrics, VmAuth, poll

pytestmark = pytest.mark.slow

PASSWORDS = {"alpha": "alpha-secret", "beta": "beta-secret"}
OUTAGE = 60.0
#: vmagent scrapes every second. On a busy machine a scrape can outlast its second and
#: vmagent skips the next tick (no sample is taken, so none can be lost): one skipped tick
#: is tolerated in the gaps; the exact count is against the scrapes vmagent made.
MAX_GAP = 2.5


class Central:
    def __init__(self, stores: Dict[str, VictoriaMetrics], sites: Dict[str, Site],
                 started: float) -> None:
        self.stores = stores
        self.sites = sites
        self.started = started


@pytest.fixture(scope="module")
def central(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Central]:
    workdir = tmp_path_factory.mktemp("fleet-outage")
    certificates = Certificates(workdir / "certs")
    with ExitStack() as stack:
        def started(thing):
            stack.callback(thing.stop)
            return thing

        store = started(VictoriaMetrics(workdir))
        vmauth = started(VmAuth(workdir, store, certificates, {"alpha": PASSWORDS["alpha"]}))
        guarded = started(VictoriaMetrics(workdir, certificates, "beta", PASSWORDS["beta"]))
        begin = time.time()
        sites = {
            "alpha": started(Site(workdir, "alpha", ["--simulate"], vmauth.write_url,
                                  PASSWORDS["alpha"], certificates.ca)),
            "beta": started(Site(workdir, "beta", ["--simulate"], guarded.write_url,
                                 "wrong-password", certificates.ca)),
        }
        poll("alpha's samples in the store", lambda: store.query('up{site="alpha"}'), 30)
        yield Central({"alpha": store, "beta": guarded}, sites, begin)


def samples(central: Central, site: str, start: float, end: float) -> Dict[str, List[float]]:
    """Raw sample timestamps (seconds) of two of the site's series, by metric name."""
    found = {}
    for match in ('up{site="%s"}' % site, 'jkbms_cell_voltage_volts{site="%s",cell="01"}' % site):
        lines = central.stores[site].export(match, start, end)
        if not lines:
            return {}
        assert len(lines) == 1, (match, lines)
        found[lines[0]["metric"]["__name__"]] = [t / 1000 for t in lines[0]["timestamps"]]
    return found


def gaps(timestamps: List[float], since: float) -> List[tuple]:
    """(seconds after ``since``, length) of every gap of a missing sample or more."""
    return [(round(a - since, 1), round(b - a, 1))
            for a, b in zip(timestamps, timestamps[1:]) if b - a >= MAX_GAP]


def holes(central: Central, site: str, start: float, end: float) -> Optional[List[tuple]]:
    """What is missing of the site's two series between start and end ([] = nothing),
    None while the store holds nothing of the period yet."""
    found = samples(central, site, start, end)
    if set(found) != {"up", "jkbms_cell_voltage_volts"}:
        return None
    missing = []
    for metric, timestamps in found.items():
        if timestamps[0] > start + MAX_GAP:
            missing.append((metric, "start", round(timestamps[0] - start, 1)))
        if timestamps[-1] < end - MAX_GAP:
            missing.append((metric, "end", round(end - timestamps[-1], 1)))
        missing += [(metric,) + gap for gap in gaps(timestamps, start)]
    return missing


def wait_until_complete(central: Central, site: str, start: float, end: float,
                        timeout: float) -> None:
    """vmagent's send queues retry with growing pauses (2, 4 … 60 s) each, so after an
    outage the blocks arrive out of order within about a minute: wait for the last one."""
    vmagent = central.sites[site].vmagent
    state: Dict[str, object] = {}

    def complete() -> bool:
        state["holes"] = holes(central, site, start, end)
        return state["holes"] == []

    poll("%s's samples from %.0f s to %.0f s complete" % (site, start, end),
         complete, timeout, interval=1,
         log=lambda: "missing: %s\nvmagent log:\n%s" % (state.get("holes"), vmagent.log()))


def assert_every_scrape_stored(central: Central, site: str) -> None:
    """Every scrape the site's vmagent made (its own counter) is one ``up`` sample in the
    store; scrapes finishing while we count may still be on their way (a second or two)."""
    vmagent = central.sites[site].vmagent
    scrapes_before = vmagent.metric("vm_promscrape_scrape_duration_seconds_count")
    stored = len(samples(central, site, central.started - 10, time.time() + 10)["up"])
    scrapes_after = vmagent.metric("vm_promscrape_scrape_duration_seconds_count")
    assert scrapes_before - 3 <= stored <= scrapes_after, (scrapes_before, stored, scrapes_after)


def test_wrong_credentials_nothing_accepted_buffer_kept_then_delivered(central: Central) -> None:
    beta = central.sites["beta"].vmagent
    # refused (401): vmagent retries the blocks it holds and queues the rest
    poll("beta's vmagent refused", lambda: beta.metric(
        "vmagent_remotewrite_requests_total", status_code="401") >= 2, 30, log=beta.log)
    time.sleep(3)
    store = central.stores["beta"]
    assert store.query('count({site="beta"})') == []
    assert store.api("label/site/values")["data"] == []
    assert beta.metric("vmagent_remotewrite_requests_total", status_code="2XX") == 0
    pending = beta.metric("vmagent_remotewrite_pending_data_bytes")
    held = beta.metric("vmagent_remotewrite_rows_pushed_after_relabel_total")
    assert pending > 0 and held > 50, (pending, held)
    refused_until = time.time()

    beta.set_password(PASSWORDS["beta"])
    # delivered: every scrape since beta's start, the refused ones included
    wait_until_complete(central, "beta", central.started + 3, refused_until + 2, 60)
    assert_every_scrape_stored(central, "beta")


def test_store_down_for_a_minute_no_sample_missing(central: Central) -> None:
    store = central.stores["alpha"]
    store.stop()
    stopped = time.time()
    time.sleep(OUTAGE)
    store.start()
    restarted = time.time()
    assert restarted - stopped >= OUTAGE
    wait_until_complete(central, "alpha", stopped - 10, restarted + 2, 90)
    assert_every_scrape_stored(central, "alpha")
