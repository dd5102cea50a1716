"""Refuse user-supplied values that could change the structure of a generated file.

A value is safe to write on one line when it holds no character that a parser may read as
the end of a line or as terminal control: C0 and C1 control characters (tab excepted), DEL,
and the Unicode line and paragraph separators. Words (tokens such as a pair style, a
pseudopotential file name or an INCAR tag) are further held to an allow-listed character set.

Every check raises :class:`UnsafeValueError`, a :class:`ValueError` whose message names the
field, so campaign validation reports it like any other field error.

Examples
--------
>>> check_line("eam/alloy", "parameters.pair_style")
'eam/alloy'
>>> check_line("eam\\nshell rm -rf ~", "pair_style")
Traceback (most recent call last):
...
matdx.safety.text.UnsafeValueError: pair_style: contains a line break (U+000A) at position 3
>>> check_tree({"control": {"calculation": "scf", "nstep": 50}}, "parameters")
{'control': {'calculation': 'scf', 'nstep': 50}}
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

__all__ = [
    "WORD_RULE",
    "UnsafeValueError",
    "check_choice",
    "check_keys",
    "check_line",
    "check_tokens",
    "check_tree",
    "check_word",
    "first_unsafe",
]

# Characters that end a line for some reader (str.splitlines, Fortran, Tcl-like parsers).
_LINE_BREAKS = {"\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"}
WORD_RE = re.compile(r"[A-Za-z0-9_.+/@:=-]+")
WORD_RULE = "letters, digits and _ . + / @ : = -"


class UnsafeValueError(ValueError):
    """A user value that may not be written into a generated file.

    Attributes
    ----------
    field : str
        Where the value came from, as a dotted path (``studies[0].parameters.pair_style``).
    reason : str
        Why it was refused.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


def first_unsafe(text: str) -> tuple[int, str] | None:
    """Return ``(position, description)`` of the first unsafe character in ``text``, or None.

    Unsafe are line breaks, NUL and every other C0/C1 control character except tab, and DEL.
    """
    for position, char in enumerate(text):
        code = ord(char)
        if char in _LINE_BREAKS:
            return position, f"a line break (U+{code:04X})"
        if char == "\t":
            continue
        if code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0:
            return position, f"a control character (U+{code:04X})"
    return None


def check_line(value: str, field: str) -> str:
    """Return ``value`` if it can be written on one line of a generated file.

    Raises
    ------
    UnsafeValueError
        If ``value`` is not a string or holds a line break or control character.
    """
    if not isinstance(value, str):
        raise UnsafeValueError(field, f"expected text, got {type(value).__name__}")
    found = first_unsafe(value)
    if found is not None:
        position, what = found
        raise UnsafeValueError(field, f"contains {what} at position {position}")
    return value


def check_word(value: str, field: str, pattern: re.Pattern[str] = WORD_RE,
               rule: str = WORD_RULE) -> str:
    """Return ``value`` if it is one non-empty word of allow-listed characters.

    Parameters
    ----------
    value : str
        The word, such as a LAMMPS style name or a file name.
    field : str
        The field it came from, for the message.
    pattern, rule : re.Pattern, str
        The allowed characters (matched against the whole value) and their description.
    """
    check_line(value, field)
    if not pattern.fullmatch(value):
        raise UnsafeValueError(field, f"{value!r} is not one word of {rule}")
    return value


def check_choice(value: Any, field: str, allowed: Collection[str]) -> str:
    """Return ``value`` if it is one of ``allowed`` (a list of known tokens)."""
    if value not in allowed:
        shown = ", ".join(repr(a) for a in sorted(allowed))
        raise UnsafeValueError(field, f"{value!r} is not one of {shown}")
    return value


def check_tree(data: Any, field: str) -> Any:
    """Return ``data`` after checking every string in it, keys included, with :func:`check_line`.

    Mappings and sequences are walked; numbers, booleans and None pass. Non-finite floats
    are left to the caller, which knows whether a program accepts them.
    """
    if isinstance(data, str):
        check_line(data, field)
    elif isinstance(data, Mapping):
        for key, item in data.items():
            if not isinstance(key, str):
                raise UnsafeValueError(field, f"key {key!r} is not text")
            check_line(key, f"{field} (key {key!r})")
            check_tree(item, f"{field}.{key}")
    elif isinstance(data, Sequence) and not isinstance(data, bytes | bytearray):
        for index, item in enumerate(data):
            check_tree(item, f"{field}[{index}]")
    return data


def check_tokens(value: str, field: str, pattern: re.Pattern[str] = WORD_RE,
                 rule: str = WORD_RULE) -> str:
    """Return ``value`` if it is one line of whitespace-separated allow-listed words.

    For command arguments such as a LAMMPS ``pair_style eam/alloy`` or ``pair_coeff * * Cu.eam``
    line, where each token must be a word of ``pattern`` (no comment, continuation, quote or
    separator characters a program's parser would act on).
    """
    check_line(value, field)
    tokens = value.split()
    if not tokens:
        raise UnsafeValueError(field, "is empty")
    for token in tokens:
        if not pattern.fullmatch(token):
            raise UnsafeValueError(field, f"token {token!r} of {value!r} is not one word of {rule}")
    return value


def check_keys(data: Any, field: str, pattern: re.Pattern[str] = WORD_RE,
               rule: str = WORD_RULE, forbidden: str = "") -> Any:
    """Return ``data`` after :func:`check_tree`, with every mapping key (at any depth) one word
    of ``pattern`` and no string value holding a character of ``forbidden``.

    For parameter trees whose keys become names in an input file (namelist variables, INCAR
    tags, CP2K sections and keywords) and whose values must not break out of their field (a
    quote in a Fortran namelist string, ``;`` in an INCAR line).
    """
    check_tree(data, field)
    if isinstance(data, Mapping):
        for key, item in data.items():
            if not pattern.fullmatch(key):
                raise UnsafeValueError(field, f"key {key!r} is not one word of {rule}")
            check_keys(item, f"{field}.{key}", pattern, rule, forbidden)
    elif isinstance(data, str):
        bad = sorted(set(data) & set(forbidden))
        if bad:
            raise UnsafeValueError(field, f"{data!r} contains {''.join(bad)!r}")
    elif isinstance(data, Sequence) and not isinstance(data, bytes | bytearray):
        for index, item in enumerate(data):
            check_keys(item, f"{field}[{index}]", pattern, rule, forbidden)
    return data
