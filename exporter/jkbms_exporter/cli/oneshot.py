"""The one-shot commands: ``read``, ``decode`` and ``scan``.

A one-shot ``read`` is timed by its user (issue 13: spawn to exit within 1.8 x the BMS's
answer and wire time). A JK-B board (``jk-serial``, and the first try of ``auto``) is sent
its read-all request as soon as the port is open and the codec has built the request,
before the pack, the configuration and what prints the answer are imported: they load
while the BMS takes its ~90 ms to answer (:meth:`SerialTransport.send_early`). Other
reads import what prints the answer in a thread once their first request is written
(``after_write``).
"""

from __future__ import annotations

import argparse
import sys
import threading

from ..errors import ConfigError, JkbmsError, TransportError
from .parser import EXIT_FAILURE, EXIT_OK, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is for type checkers only: it costs every command start-up time
    from typing import Any, Callable, Dict, List, Optional, Tuple

    import logging

    from ..links.serial import SerialTransport
    from ..reading import Reading



def _log() -> logging.Logger:
    import logging  # loaded when used: a one-shot read loads it while the BMS answers

    return logging.getLogger("jkbms_exporter")


def _setup_logging(args: argparse.Namespace) -> None:
    from ..logs import setup_logging

    setup_logging(args.log_level, args.log_format)


def _import_output(as_json: bool, raw: bool) -> None:
    """Import what prints a reading (run while the BMS answers)."""
    if as_json:
        import json  # noqa: F401

        from ..metrics import reading_to_json  # noqa: F401
    else:
        from ..report import render_reading  # noqa: F401
    if raw:
        from ..capture import redact  # noqa: F401


class _OutputImports:
    """Starts :func:`_import_output` in a thread, once: when the first request has been
    written (the BMS then answers in ~90 ms, in which this thread runs), or at the latest
    before printing."""

    def __init__(self, as_json: bool, raw: bool) -> None:
        self._thread = threading.Thread(target=self._run, args=(as_json, raw),
                                        name="jkbms-imports", daemon=True)
        self._started = False

    def _run(self, as_json: bool, raw: bool) -> None:
        try:
            _import_output(as_json, raw)
        except Exception:  # the main thread imports the same again and reports it
            _log().debug("importing the output modules failed", exc_info=True)

    def start(self) -> None:
        if not self._started:
            try:
                self._thread.start()
            except RuntimeError:  # no thread to be had: printing imports them itself
                return
            self._started = True

    def join(self) -> None:
        if self._started:
            self._thread.join()


def cmd_read(args: argparse.Namespace) -> int:
    from ..links.ble import is_ble_url

    if not args.url.strip():
        raise UsageError("read: the URL is empty (a device path like /dev/ttyUSB0 or "
                         "socket://HOST:PORT)")
    if args.protocol == "jk-pb" and args.address is None:
        raise UsageError("read: --protocol jk-pb needs --address (the pack's DIP address 1-15)")
    read_timeout = args.read_timeout
    if is_ble_url(args.url):  # find the device, connect, wait for the first frame: seconds
        from ..links.ble import DEFAULT_CONNECT_TIMEOUT, DEFAULT_SCAN_TIMEOUT

        read_timeout = max(read_timeout or 0.0,
                           DEFAULT_SCAN_TIMEOUT + DEFAULT_CONNECT_TIMEOUT + 5.0)
    imports = _OutputImports(args.json, args.raw)
    auto = args.protocol == "auto" and args.address is None and not is_ble_url(args.url)
    early = auto or (args.protocol == "jk-serial" and not is_ble_url(args.url))
    # Logging too loads while the BMS answers: before the request only debug lines could
    # be logged (and pyserial's own, asked for with ?logging= in a URL).
    late_logging = early and args.log_level != "debug" and "logging=" not in args.url
    if not late_logging:
        _setup_logging(args)
    opened: Dict[str, SerialTransport] = {}
    if early:
        try:
            opened[args.url] = _send_early(args.url, args.baud)
        finally:
            if late_logging:
                _setup_logging(args)
        imports.start()
    try:
        if auto:
            reading, frame = _read_auto(args, read_timeout, imports.start, opened)
        else:
            from ..config import PackConfig, build_packs

            config = PackConfig("1", args.url, args.baud, read_timeout, protocol=args.protocol,
                                address=args.address if args.protocol != "jk-serial" else None)
            reading, frame = _read_once(build_packs([config], opened), imports.start)
    finally:
        for transport in opened.values():  # closed by the read, unless it never began
            transport.close()
        imports.join()
    shown = b""
    if args.raw and frame:
        from ..capture import redact

        shown = redact(frame)
    _print_reading(reading, args.json, port=args.url, frame=shown)
    return EXIT_OK


def _send_early(url: str, baudrate: int) -> SerialTransport:
    """The port of a JK-B read, open, with the read-all request written: the transport
    :func:`~jkbms_exporter.config.build_packs` would make for it (it checks the URL the
    same way first, and fails as the read itself would)."""
    from ..links.serial import SerialTransport, check_url

    try:
        check_url(url)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    # every 4E57 frame comes from the codec's guarded builder (reads only), none from here;
    # its frame module is light: the rest of the codec loads while the BMS answers
    from ..protocols.jk_serial_frame import read_all_request

    transport = SerialTransport(url, baudrate=baudrate)
    transport.send_early(read_all_request())
    return transport


def _read_once(packs: List[Any], on_sent: Optional[Callable[[], None]] = None
               ) -> Tuple[Any, bytes]:
    """Read the first of ``packs`` that answers (all on one port), then close them all.
    ``on_sent`` is called once a request is on its way (serial ports and TCP gateways)."""
    try:
        for index, pack in enumerate(packs):
            bus = getattr(pack.protocol, "bus", None)
            if bus is not None:  # one-shot: fetch settings and device info at once
                from ..links.pb_bus import EXTRA_FRAMES

                bus.extras_per_read = len(EXTRA_FRAMES)
            if on_sent is not None and hasattr(pack.transport, "after_write"):
                pack.transport.after_write = on_sent
            try:
                return pack.read()
            except JkbmsError as error:
                if index == len(packs) - 1 or isinstance(error, TransportError):
                    raise
        raise JkbmsError("nothing to read")
    finally:
        for pack in packs:
            pack.close()


def _read_auto(args: argparse.Namespace, read_timeout: Optional[float],
               on_sent: Optional[Callable[[], None]] = None,
               opened: Optional[Dict[str, SerialTransport]] = None) -> Tuple[Any, bytes]:
    """``read --protocol auto`` without ``--address``: JK-B (4E57) first, then a JK-PB pack
    at each DIP address 1-15, as ``serve`` would find it; says what was tried. ``opened``:
    the port with the JK-B request already sent (:func:`_send_early`)."""
    from ..config import PackConfig, build_packs

    first: Optional[JkbmsError] = None
    for configs in ([PackConfig("1", args.url, args.baud, read_timeout)],
                    [PackConfig(str(address), args.url, args.baud, read_timeout,
                                protocol="jk-pb", address=address) for address in range(1, 16)]):
        try:
            # the JK-B try reads the answer to the request already sent; JK-PB opens anew
            return _read_once(build_packs(configs, opened if first is None else None), on_sent)
        except TransportError:
            raise
        except JkbmsError as error:
            if first is not None:
                raise JkbmsError("no answer as JK-B (4E57: %s) nor as JK-PB at DIP addresses "
                                 "1-15 (last: %s); check the wiring (TX/RX, A/B), the baud "
                                 "rate (--baud) and that the BMS is awake" % (first, error)) \
                    from None
            first = error
            _log().info("%s: no JK-B (4E57) answer (%s); trying JK-PB addresses 1-15",
                        args.url, error)
    raise AssertionError("unreachable")  # pragma: no cover


def parse_hex(text: str) -> bytes:
    cleaned = text.replace("0x", "").replace("0X", "")
    for separator in " \t\r\n:,-":
        cleaned = cleaned.replace(separator, "")
    if not cleaned:
        raise UsageError("decode: no hex digits given")
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise UsageError("decode: not a hex string (odd length or a non-hex character)") from None


def cmd_decode(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.hex == "-" else args.hex
    data = parse_hex(text)
    from ..capture import decode_capture

    reading, _ = decode_capture(data, args.generation, args.address, args.verify)
    _print_reading(reading, args.json, frame=b"")
    return EXIT_OK


def _print_reading(reading: Reading, as_json: bool, port: str = "",
                   frame: bytes = b"") -> None:
    if as_json:
        import json

        from ..metrics import reading_to_json

        document = dict(reading_to_json(reading, port))
        if frame:
            document["frame_hex"] = frame.hex()
        print(json.dumps(document, indent=2))
    else:
        from ..report import render_reading

        sys.stdout.write(render_reading(reading, port, frame))


def cmd_scan(args: argparse.Namespace) -> int:
    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.ble:
        if args.url:
            raise UsageError("scan: give a URL or --ble, not both")
        from ..links.ble import format_scan_results, scan_ble

        sys.stdout.write(format_scan_results(scan_ble(args.timeout, progress)))
        return EXIT_OK
    if not args.url:
        raise UsageError("scan: give the device path or URL to scan, or --ble")
    from ..links.serial import check_url
    from ..scan import config_snippet, scan_port

    try:
        check_url(args.url)
    except ValueError as error:
        raise UsageError(str(error)) from None

    found = scan_port(args.url, progress)
    sys.stdout.write(config_snippet(args.url, found))
    return EXIT_OK if found else EXIT_FAILURE
