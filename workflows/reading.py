"""Library exceptions raised while reading user files, translated into reasons a user can act on.

File readers (ASE, pymatgen, PyYAML) report a bad file with whatever exception their code hits:
``KeyError: 'Xx'`` for an unknown element, ``IndexError: pop from empty list`` for a file that
ends early. :func:`reason` turns such an exception into one sentence.
"""

from __future__ import annotations

__all__ = ["reason"]


def reason(error: BaseException) -> str:
    """One line saying why a file could not be read, without a traceback.

    Examples
    --------
    >>> reason(KeyError("Xx"))
    "unknown name 'Xx' (an element symbol or a key the format needs)"
    >>> reason(IndexError("pop from empty list"))
    'the file ends early or is empty (pop from empty list)'
    """
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if isinstance(error, UnicodeDecodeError):
        return (f"not UTF-8 text: byte 0x{error.object[error.start]:02x} at position "
                f"{error.start}")
    if isinstance(error, KeyError):
        return f"unknown name {text} (an element symbol or a key the format needs)"
    if isinstance(error, IndexError | StopIteration | EOFError):
        return f"the file ends early or is empty ({text or type(error).__name__})"
    if isinstance(error, RecursionError):
        return "the file is nested too deeply"
    if isinstance(error, MemoryError):
        return "the file is too large to read"
    if isinstance(error, ValueError | TypeError | RuntimeError) and text:
        return f"malformed content: {text}"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
