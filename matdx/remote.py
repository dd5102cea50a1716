"""The command line against a matdx service instead of a local store.

With ``$MATDX_URL`` (and ``$MATDX_TOKEN`` for a signed-in user; anonymous without it),
``matdx submit``, ``status`` and ``results`` fetch their data from the service's REST routes
and print it with the same functions as for a local store, so the output is the same.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when used: the command line starts fast without a service
    from matdx.client import CampaignStatus

__all__ = ["TOKEN_VARIABLE", "URL_VARIABLE", "RemoteClient", "RemoteError", "remote_client"]

URL_VARIABLE = "MATDX_URL"
TOKEN_VARIABLE = "MATDX_TOKEN"


class RemoteError(RuntimeError):
    """The service refused a request or could not be reached (the message says which)."""


def remote_client() -> RemoteClient | None:
    """The client of the service ``$MATDX_URL`` names, or None when it is not set."""
    url = os.environ.get(URL_VARIABLE, "").strip()
    if not url:
        return None
    return RemoteClient(url, os.environ.get(TOKEN_VARIABLE, "").strip() or None)


class RemoteClient:
    """The data of ``submit``, ``status`` and ``results`` from a matdx service.

    Parameters
    ----------
    url
        The service's base URL (``http://host:8000``).
    token
        A token of ``matdx tokens create``; None: anonymous (public campaigns only).
    timeout_s
        Timeout of one request, s.
    """

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 60.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise RemoteError(f"${URL_VARIABLE}: {url!r} is not an http:// or https:// URL")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def _request(self, method: str, path: str, **options: Any) -> Any:
        import httpx

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            answer = httpx.request(
                method, f"{self.url}{path}", headers=headers, timeout=self.timeout_s, **options
            )
        except httpx.HTTPError as error:
            raise RemoteError(f"{self.url}: {error}") from error
        if answer.status_code >= 400:
            try:
                detail = answer.json().get("detail")
            except ValueError:
                detail = answer.text[:200]
            raise RemoteError(f"{self.url}{path}: {answer.status_code} {detail}")
        return answer.json()

    def submit_file(
        self, path: str | Path, *, force: bool = False, force_large: bool = False
    ) -> dict[str, Any]:
        """Send a campaign file (validated by the service as ``matdx submit`` validates it);
        returns the new campaign's status, with its number of ``workflows``."""
        body = Path(path).read_bytes()
        params = {"force": force, "force_large": force_large}
        return self._request("POST", "/campaigns", content=body, params=params)

    def resolve_campaign(self, identifier: str) -> str:
        """The id of the visible campaign named ``identifier`` (the newest of that name) or
        whose id starts with it."""
        from matdx.store.queries import MIN_PREFIX

        campaigns = self._request("GET", "/campaigns")
        named = [c["id"] for c in campaigns if c["name"] == identifier]
        if named:
            return named[-1]  # listed oldest first
        if len(identifier) < MIN_PREFIX:
            raise LookupError(
                f"{identifier!r}: give a campaign name or at least {MIN_PREFIX} characters of an id"
            )
        matches = [c["id"] for c in campaigns if c["id"].startswith(identifier)]
        if len(matches) != 1:
            found = ", ".join(m[:12] for m in matches) or "no visible campaign"
            raise LookupError(f"{identifier!r}: matches {found}")
        return matches[0]

    def status(self, campaign: str | None = None) -> list[CampaignStatus]:
        """Jobs by state of the campaign (or of every campaign) the token's user may see."""
        from matdx.client import CampaignStatus
        from matdx.store.queries import Failure

        if campaign is not None:
            listed = [self._request("GET", f"/campaigns/{self.resolve_campaign(campaign)}")]
        else:
            listed = self._request("GET", "/campaigns")
        return [
            CampaignStatus(
                c["id"],
                c["name"],
                c["counts"],
                c["blocked"],
                [Failure(**f) for f in c["failures"]],
            )
            for c in listed
        ]

    def results(self, campaign: str) -> list[dict[str, Any]]:
        """Final outputs of each workflow of a campaign, as ``Client.results`` gives them."""
        return self._request("GET", f"/campaigns/{self.resolve_campaign(campaign)}/results")
