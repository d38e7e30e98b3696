"""Text from adapter code (exception messages, names) made safe to print and to store.

An exception's message reaches the terminal, the report and the HTML page. Adapter code chooses it:
escape sequences in it would clear the screen or forge a verdict line, and a message of a hundred
megabytes would take minutes to print and store. What is shown is one line: every control character,
newlines included (a message could otherwise start a line of its own that reads like a verdict), the C1
range, Unicode's line and paragraph separators and bidi overrides are written as visible escapes; tabs
stay; a long message keeps its head and a note of what was dropped.
"""

from __future__ import annotations

import re

MESSAGE_LIMIT = 4000  # characters of one message kept; a real traceback's last line fits many times over
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def plain_str(value: object) -> str:
    """``str(value)`` as a plain ``str``: a subclass's own ``__str__`` or ``__format__`` is not used."""
    if isinstance(value, str):
        return str.__str__(value)
    return str(value)


def shown(text: object, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` with control characters escaped and at most ``limit`` characters of it kept."""
    text = plain_str(text)
    dropped = len(text) - limit
    if dropped > 0:
        text = text[:limit]
    text = _UNSAFE.sub(lambda found: found.group().encode("unicode_escape").decode("ascii"), text)
    return text + (f" ... [{dropped} more characters not shown]" if dropped > 0 else "")


def is_safe_name(text: str, limit: int = 200) -> bool:
    """A one-line name that tables and titles can print as it is."""
    return 0 < len(text) <= limit and text.isprintable()
