"""Licences of records: SPDX license expressions.

Identifiers are checked against the SPDX licence list shipped in the ``license-expression``
package (its ``scancode-licensedb-index.json``), so no network is needed. An expression may
combine identifiers (``CC-BY-4.0 OR MIT``, ``GPL-2.0-or-later WITH Classpath-exception-2.0``)
and may name a licence that has no SPDX id as ``LicenseRef-<name>`` (SPDX's own rule).
"""

from __future__ import annotations

import functools
import re
from typing import Any

__all__ = ["LicenseError", "normalize_license"]

LICENSE_REF = re.compile(r"^LicenseRef-[A-Za-z0-9.\-]+$")


class LicenseError(ValueError):
    """A licence is not a valid SPDX license expression."""


@functools.cache
def _licensing() -> Any:
    from license_expression import get_spdx_licensing

    return get_spdx_licensing()


@functools.lru_cache(maxsize=1024)  # parsing costs ~0.1 ms; a store holds few distinct licences
def normalize_license(text: str | None) -> str | None:
    """The canonical form of an SPDX license expression, or None for no licence.

    Identifiers are matched case-insensitively and written in their SPDX case
    (``cc-by-4.0`` → ``CC-BY-4.0``).

    Parameters
    ----------
    text
        An SPDX license expression; None or blank means "no licence given".

    Raises
    ------
    LicenseError
        If the expression does not parse, or names an identifier that is neither on the SPDX
        licence list nor a ``LicenseRef-`` reference.

    Examples
    --------
    >>> normalize_license("mit or cc-by-4.0")
    'MIT OR CC-BY-4.0'
    """
    if text is None or not text.strip():
        return None
    licensing = _licensing()
    try:
        parsed = licensing.parse(text.strip(), validate=False, strict=True)
    except Exception as err:  # license-expression raises several unrelated error classes
        raise LicenseError(f"license: {text!r} is not an SPDX license expression ({err})") from err
    unknown = sorted(
        symbol.key
        for symbol in licensing.license_symbols(parsed, unique=True, decompose=True)
        if symbol.key not in licensing.known_symbols and not LICENSE_REF.match(symbol.key)
    )
    if unknown:
        raise LicenseError(
            f"license: unknown SPDX identifier(s) {', '.join(map(repr, unknown))} in {text!r}; "
            "use an identifier from the SPDX licence list or LicenseRef-<name>"
        )
    return parsed.render()
