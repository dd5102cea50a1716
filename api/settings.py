"""Limits and options of one running service."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ServiceSettings"]


@dataclass(frozen=True)
class ServiceSettings:
    """What the service accepts.

    Attributes
    ----------
    max_page
        Largest page a client may ask for (records, OPTIMADE ``page_limit``).
    default_page
        Page size when the client names none.
    max_body_bytes
        Largest request body, bytes (a campaign file fits in far less).
    rate_per_minute
        Requests per minute per token (anonymous clients: per address); 0 disables the limit.
    base_url
        The public URL of the service (behind a proxy), for OPTIMADE links; None: taken from
        each request.
    chart_js
        The Chart.js file the dashboard loads (UMD build); by default Debian's
        ``libjs-chart.js``.
    """

    max_page: int = 1000
    default_page: int = 20
    max_body_bytes: int = 1 << 20
    rate_per_minute: int = 600
    base_url: str | None = None
    chart_js: str = "/usr/share/javascript/chart.js/chart.min.js"
