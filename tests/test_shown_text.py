"""Text from adapter code made safe to print: exception messages, names, and numpy put back."""

from __future__ import annotations

import numpy as np

from parity import integrity
from parity.guard import describe_exception
from parity.shown_text import MESSAGE_LIMIT, is_safe_name, plain_str, shown


def test_control_characters_are_escaped_and_the_text_stays_on_one_line():
    text = shown("boom\x1b[2J\r\nPASS\x07\u202e\x9b tab\there")
    assert text == "boom\\x1b[2J\\r\\nPASS\\x07\\u202e\\x9b tab\there"


def test_a_long_message_keeps_its_head_and_says_how_much_was_dropped():
    text = shown("a" * (MESSAGE_LIMIT + 123))
    assert text.startswith("a" * MESSAGE_LIMIT) and text.endswith("[123 more characters not shown]")
    assert shown("short") == "short"


def test_a_str_subclass_is_read_as_its_characters():
    class Sneaky(str):
        def __str__(self):
            return "\x1b[2Jfake"

    assert plain_str(Sneaky("real")) == "real" and type(plain_str(Sneaky("real"))) is str
    assert is_safe_name("port-1") and not is_safe_name("") and not is_safe_name("a\nb") and not is_safe_name("n" * 201)


def test_an_exception_whose_str_raises_is_still_described():
    class Nasty(Exception):
        def __str__(self):
            raise RuntimeError("no")

    assert describe_exception(Nasty()) == "Nasty: <str() of the exception raised RuntimeError>"
    assert describe_exception(SystemExit("\x1b[31m")) == "called sys.exit('\\x1b[31m')"


def test_numpy_functions_replaced_by_adapter_code_are_put_back():
    original_abs, original_max = np.abs, np.max
    try:
        np.abs = lambda x: 0
        del np.max
        assert sorted(integrity.restore()) == ["numpy.abs", "numpy.max"]
        assert np.abs is original_abs and np.max is original_max
        assert integrity.restore() == []
    finally:
        np.abs, np.max = original_abs, original_max
