"""SIGTERM/SIGINT stop ``serve`` and ``simulate`` whenever they land (CI saw a hang)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Each round a thread signals this process at a random moment, often while the main
# thread is entering wait(): a handler that took a lock (``threading.Event.set``) could
# then deadlock against the main thread holding it, and this script would never finish.
SIGNAL_STORM = textwrap.dedent("""
    import os, random, signal, threading, time
    from jkbms_exporter.cli import _catch_stop_signals

    wait = _catch_stop_signals()
    for round in range(ROUNDS):
        delay = random.random() * 2e-4
        kill = threading.Thread(target=lambda: (time.sleep(delay),
                                                os.kill(os.getpid(), signal.SIGTERM)))
        kill.start()
        wait()
        kill.join()
    print("stopped", ROUNDS, "times")
""")


def test_every_signal_stops_a_wait_whenever_it_lands() -> None:
    rounds = 3000
    result = subprocess.run([sys.executable, "-c", SIGNAL_STORM.replace("ROUNDS", str(rounds))],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["stopped", str(rounds), "times"]
