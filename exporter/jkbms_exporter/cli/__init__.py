"""Command line: ``serve``, ``read``, ``decode``, ``scan``, ``simulate``.

Flags follow the Prometheus exporter style (``--web.listen-address``, ``--log.level``).
Every expected failure ends in one line on stderr and a non-zero exit status, never a
traceback.

Rooms: :mod:`.parser` (the flags, added per command when it is parsed), :mod:`.oneshot`
(``read``, ``decode``, ``scan``), :mod:`.serve` (``serve``, ``simulate``). A command's
module is imported when the command runs, so a one-shot ``read`` starts without the web
server, prometheus_client, the simulators or Bluetooth (issue 13).
"""

from __future__ import annotations

import os
import sys

from ..errors import ConfigError, JkbmsError
from .parser import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, SIMULATED_PACK, UsageError, build_parser

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is for type checkers only: it costs every command start-up time
    import argparse
    from typing import Callable, List, Optional, Sequence

__all__ = ["main", "build_parser", "UsageError", "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE",
           "SIMULATED_PACK"]

#: Names the command modules define, for ``from jkbms_exporter.cli import X`` (PEP 562:
#: importing this package does not import them).
_ROOM_OF = {
    "cmd_serve": "serve", "cmd_simulate": "serve", "simulated_bus": "serve",
    "PB_LATENCY": "serve", "_catch_stop_signals": "serve",
    "cmd_read": "oneshot", "cmd_decode": "oneshot", "cmd_scan": "oneshot",
    "parse_hex": "oneshot",
}


def __getattr__(name: str) -> object:
    room = _ROOM_OF.get(name)
    if room == "serve":
        from . import serve as module
    elif room == "oneshot":
        from . import oneshot as module  # type: ignore[no-redef]
    else:
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    return getattr(module, name)


def command(name: str) -> Callable[[argparse.Namespace], int]:
    """The function that runs command ``name`` (its module imported now)."""
    return __getattr__("cmd_" + name)  # type: ignore[return-value]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line ``argv`` and return the exit status.

    Called without ``argv`` it is the program itself (the console script, ``python -m``):
    a one-shot command's process then ends as soon as its output is flushed, without the
    interpreter's teardown (``os._exit``), which costs a one-shot ``read`` about a fifth of
    its own work (issue 13). Called with ``argv`` (tests, embedding) it only returns.
    """
    ran: List[str] = []
    code = _run(argv, ran)
    if argv is None and ran and ran[0] in ONE_SHOT_COMMANDS:
        _end_process(code)
    return code


#: Commands whose process ends the moment their output is out (:func:`main`).
ONE_SHOT_COMMANDS = ("read", "decode")


def _end_process(code: int) -> None:
    """Flush the output and end the process now; returns (for the ordinary exit, which
    reports it) only when the output cannot be flushed, e.g. into a closed pipe."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    logging = sys.modules.get("logging")
    if logging is not None:
        logging.shutdown()  # what the ordinary exit would do: flush and close the handlers
    os._exit(code)


def _run(argv: Optional[Sequence[str]], ran: List[str]) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        ran.append(args.command)
        if args.command != "read":  # read sets logging up itself, as late as it can
            from ..logs import setup_logging

            setup_logging(args.log_level, args.log_format)
        return command(args.command)(args)
    except (UsageError, ConfigError) as error:  # a bad flag or configuration value
        print("jkbms-exporter: %s" % error, file=sys.stderr)
        return EXIT_USAGE
    except JkbmsError as error:
        print("jkbms-exporter: %s" % error, file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `jkbms-exporter read … | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
