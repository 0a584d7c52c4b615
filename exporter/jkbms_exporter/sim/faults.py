"""The link faults a simulator can show, by name (no I/O: the command line lists them)."""

from __future__ import annotations

from typing import Dict

#: Transmission faults a simulated link can show (independent of the scenario, which is
#: what the BMS measures). Each is what users see on real links.
FAULTS: Dict[str, str] = {
    "none": "answer every request correctly",
    "silent": "no answer at all (wrong wiring, sleeping BMS)",
    "partial": "the first part of the reply, then silence",
    "junk-before": "line noise before the reply",
    "bad-checksum": "a reply whose checksum does not match",
    "bad-length": "a reply whose length field is wrong",
    "chunked": "the reply in tiny chunks with pauses (USB latency timers, TCP gateways)",
    "trailing-junk": "extra bytes after the reply",
    "trickle": "the reply a few bytes at a time, too slowly to finish before a deadline",
}


def fault_help() -> str:
    return "; ".join("%s: %s" % item for item in FAULTS.items())
