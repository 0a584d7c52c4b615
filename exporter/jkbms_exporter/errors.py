"""Error types shared by codecs, transports and the collector.

Every error a read can end in carries a ``reason``: the value of the ``reason`` label of
``jkbms_read_errors_total``. The set of reasons is fixed so that every series exists
from the first scrape on.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is for type checkers only: every command imports this module
    from typing import Optional

READ_ERROR_REASONS = ("timeout", "checksum", "malformed", "io")


class JkbmsError(Exception):
    """Base class of every error this package raises on purpose."""

    reason = "malformed"


class FrameError(JkbmsError, ValueError):
    """A reply frame could not be decoded."""

    reason = "malformed"

    def __init__(self, message: str, offset: Optional[int] = None) -> None:
        if offset is not None:
            message = "%s (at byte %d)" % (message, offset)
        super().__init__(message)
        self.offset = offset


class BadStartError(FrameError):
    """The frame does not begin with the protocol's start bytes."""


class LengthMismatchError(FrameError):
    """The frame's length field disagrees with the number of bytes received."""


class MissingEndByteError(FrameError):
    """The end marker byte is missing where the length field says it must be."""


class ChecksumError(FrameError):
    """The transmitted checksum does not match the one computed over the frame."""

    reason = "checksum"

    def __init__(self, expected: int, received: int) -> None:
        super().__init__(
            "checksum mismatch: frame says 0x%04X, bytes sum to 0x%04X" % (received, expected)
        )
        self.expected = expected
        self.received = received


class UnknownTagError(FrameError):
    """A register tag that the register table does not know."""

    def __init__(self, tag: int, offset: int) -> None:
        super().__init__("unknown register tag 0x%02X" % tag, offset)
        self.tag = tag


class TruncatedFieldError(FrameError):
    """A register's value runs past the end of the information field."""


class IncompleteFrameError(FrameError):
    """A reply started but stopped arriving before the length its header announced."""


class TransportError(JkbmsError, OSError):
    """The port could not be opened, read or written (device gone, permission, reset)."""

    reason = "io"


class ReadTimeout(JkbmsError, TimeoutError):
    """No complete reply arrived before the deadline."""

    reason = "timeout"

    def __init__(self, message: str, received: int = 0) -> None:
        super().__init__(message)
        self.received = received


def reason_of(error: BaseException) -> str:
    """The ``jkbms_read_errors_total`` reason for any exception raised by a read."""
    if isinstance(error, JkbmsError):
        return error.reason
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, OSError):
        return "io"
    return "malformed"


class ConfigError(ValueError):
    """A pack definition or configuration file that cannot work; the message names the
    offending value (and, for files, file:line: field)."""
