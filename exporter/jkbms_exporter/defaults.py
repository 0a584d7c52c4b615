"""Defaults and choices that both the command line and the modules using them need.

This module imports nothing: ``--help``, ``--version`` and the flags of a one-shot
``read`` come from here without loading pyserial, the codecs or the collector. Each
value is re-exported by the module it belongs to (``links.serial.DEFAULT_BAUDRATE``,
``pack.DEFAULT_READ_TIMEOUT``…), which is where code should take it from.
"""

#: Serial line speed of a JK BMS (links.serial).
DEFAULT_BAUDRATE = 115200
#: Seconds a jk-serial pack waits for one complete reply (pack).
DEFAULT_READ_TIMEOUT = 1.0
#: Seconds a JK-PB pack waits for one reply on the bus (links.pb_bus).
DEFAULT_REPLY_TIMEOUT = 0.5
#: What a pack may speak (config).
PROTOCOLS = ("jk-serial", "jk-pb", "auto")
DEFAULT_PROTOCOL = "jk-serial"
#: Cell chemistries a pack may be configured with (pack).
CHEMISTRIES = ("lifepo4", "nmc", "lto")
DEFAULT_CHEMISTRY = "lifepo4"
#: Two samples further apart than this are not integrated (energy).
DEFAULT_MAX_GAP = 300.0
#: The range ``energy_max_gap`` may be configured in, seconds (energy, ranges).
MAX_GAP_RANGE = (1.0, 86400.0)
#: Layouts of JK02/JK04 Bluetooth records (protocols.jk02_layout.GENERATIONS, which a
#: codec cannot import from here; a test keeps the two equal).
GENERATIONS = ("JK02_24S", "JK02_32S", "JK04")
#: ``--log.level`` and ``--log.format`` (logs).
LOG_LEVELS = ("debug", "info", "warn", "error")
LOG_FORMATS = ("logfmt", "json")
