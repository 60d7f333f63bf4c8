"""Log and audit text a peer cannot forge: control characters escaped, whoever logs.

A peer controls UIDs, AE titles and text in what it sends, and pynetdicom logs some of
them verbatim (e.g. an invalid Affected SOP Instance UID, at ERROR). A newline in such a
value would start a line that looks like one of ours; ESC could drive a terminal. So:

* ``safe_text`` escapes a value before we log or audit it (bounded, ASCII, printable);
* ``SafeFormatter`` escapes the *final* message of every record on a handler, pynetdicom's
  included, and indents every line of a traceback, so no line a peer wrote can start at
  column 0 where a real record starts.
"""

from __future__ import annotations

import logging
import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char, f"\\x{ord(char):02x}")


def escape_control(text: str) -> str:
    """``text`` with every C0/C1 control character (newline, ESC, NUL, ...) written as an escape."""
    return _CONTROL.sub(_escape_char, text)


def safe_text(value: object, limit: int = 80) -> str:
    """A peer-supplied value made safe for logs and the audit trail: printable ASCII, bounded."""
    text = value if isinstance(value, str) else repr(value)
    text = escape_control(text.encode("ascii", "backslashreplace").decode("ascii"))
    return text if len(text) <= limit else text[:limit] + f"...({len(text)} chars)"


class SafeFormatter(logging.Formatter):
    """Formats records with the message's control characters escaped; tracebacks indented."""

    def format(self, record: logging.LogRecord) -> str:
        saved = record.msg, record.args
        try:
            record.msg, record.args = escape_control(record.getMessage()), None
            text = super().format(record)
        finally:
            record.msg, record.args = saved
        head, sep, tail = text.partition("\n")  # only the exception/stack text can hold newlines now
        if not sep:
            return head
        lines = [escape_control(line) for line in tail.split("\n")]
        return head + "\n" + "\n".join("    | " + line for line in lines)


def configure_logging(level: str = "INFO") -> logging.Handler:
    """Root logging for ``dermpacs serve``: one stderr handler with ``SafeFormatter``."""
    handler = logging.StreamHandler()
    handler.setFormatter(SafeFormatter(LOG_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # warnings (pydicom's quote peer values) go through the same formatter
    if level.upper() != "DEBUG":  # pynetdicom narrates every PDU at INFO
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    return handler


__all__ = ["SafeFormatter", "configure_logging", "escape_control", "safe_text"]
