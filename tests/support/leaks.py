"""What must never reach a client, in an HTTP body, a stream message or a close reason: a stack
trace, a file path on the server, or an exception class name (which tells an attacker which
code path broke and invites probing it). One list for every suite that scans for it."""

from __future__ import annotations

import re

LEAK_MARKERS = (
    "Traceback",
    'File "',
    '.py"',
    ".py:",
    "/work/",
    "site-packages",
    "/usr/",
    "/tmp/",
    "Exception",
    "Error:",
)
EXCEPTION_NAME = re.compile(r"\b[A-Z][A-Za-z]*(?:Error|Exception|Interrupt|Exit)\b")
SOURCE_FILE = re.compile(r"\w\.py\b")


def leak_markers_in(text: str) -> list[str]:
    """The leak markers found in `text` (empty when it is clean)."""
    found = [marker for marker in LEAK_MARKERS if marker in text]
    found += EXCEPTION_NAME.findall(text)
    found += SOURCE_FILE.findall(text)
    return found
