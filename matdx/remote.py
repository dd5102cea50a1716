"""The command line against a matdx service instead of a local store.

With ``$MATDX_URL`` (and ``$MATDX_TOKEN`` for a signed-in user; anonymous without it),
``matdx submit``, ``status``, ``results``, ``query``, ``show`` (of a record) and ``export``
(``optimade``, ``parquet``) fetch their data from the service's REST routes and print it
with the same functions as for a local store, so the output is the same.
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

    def _request(self, method: str, path: str, *, raw: bool = False, **options: Any) -> Any:
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
        return answer.content if raw else answer.json()

    def _record_params(self, criteria: dict[str, Any]) -> list[tuple[str, str]]:
        """``/records`` parameters from the command line's criteria (see
        :meth:`matdx.client.Client.query`); criteria the service does not take are refused."""
        params: list[tuple[str, str]] = []
        for name in ("functional", "potential"):
            if criteria.get(name):
                raise RemoteError(f"--{name}: not available through a service ({self.url})")
        for name in ("elements", "any_elements", "only_elements", "calculation", "code", "tags",
                     "access"):  # fmt: skip
            if criteria.get(name):
                params.append((name, ",".join(criteria[name])))
        for name in ("formula", "owner", "status"):
            if criteria.get(name) is not None:
                params.append((name, str(criteria[name])))
        if criteria.get("nsites"):
            params.append(("nsites", _bounds(criteria["nsites"])))
        for name, bounds in sorted((criteria.get("properties") or {}).items()):
            params.append(("property", f"{name}={_bounds(bounds)}"))
        if criteria.get("campaign"):
            ids = [self.resolve_campaign(c) for c in criteria["campaign"]]
            params.append(("campaign", ",".join(ids)))
        return params

    def query(
        self, *, limit: int, after: str | None = None, count: bool = False, **criteria: Any
    ) -> tuple[list[dict[str, Any]], str | None, int | None]:
        """One page of records the token's user may read: (summaries as
        :func:`matdx.store.search.search_records` gives them, next cursor, total or None)."""
        from datetime import datetime

        params = self._record_params(criteria)
        params.append(("limit", str(limit)))
        if after is not None:
            params.append(("after", after))
        if count:
            params.append(("count", "true"))
        page = self._request("GET", "/records", params=params)
        for item in page["items"]:
            for key in ("created_at", "embargo_until"):
                if isinstance(item.get(key), str):
                    item[key] = datetime.fromisoformat(item[key])
        return page["items"], page["next_after"], page.get("count")

    def show_record(self, identifier: str) -> dict[str, Any]:
        """A record (its id or a prefix of at least 4 characters), as
        :meth:`matdx.client.Client.show` gives it; jobs and campaigns are shown locally."""
        from matdx.store.queries import MIN_PREFIX

        if len(identifier) < MIN_PREFIX:
            raise RemoteError(f"{identifier!r}: give at least {MIN_PREFIX} characters of an id")
        if len(identifier) < 36:
            identifier = self._request("GET", f"/records/resolve/{identifier}")["record_id"]
        return {"kind": "record", **self._request("GET", f"/records/{identifier}")}

    def export(self, fmt: str, path: str | Path, *, overwrite: bool = False,
               **criteria: Any) -> int:  # fmt: skip
        """Write the records the token's user may export as ``optimade`` (JSON Lines) or
        ``parquet``, as the service streams them; returns the number of records."""
        from matdx.store.exporting import claim_export_target

        served = {"optimade": "optimade-jsonl", "parquet": "parquet"}
        if fmt not in served:
            raise RemoteError(
                f"export {fmt}: a service exports {', '.join(served)} only ({self.url})"
            )
        for name in ("any_elements", "only_elements", "nsites", "functional", "potential",
                     "properties", "access", "owner", "status"):  # fmt: skip
            if criteria.get(name):
                raise RemoteError(
                    f"--{name.replace('_', '-')}: a service's export does not take it "
                    f"({self.url}); select with --elements, --formula, --calculation, --code, "
                    "--tag or --campaign"
                )
        params = [
            (k, v) for k, v in self._record_params(criteria) if k in
            ("elements", "formula", "calculation", "code", "tags", "campaign")
        ]  # fmt: skip
        claim_export_target(fmt, path, overwrite=overwrite)
        body = self._request("GET", f"/exports/{served[fmt]}", params=params, raw=True)
        target = Path(path)
        partial = target.with_name(f".{target.name}.partial")  # never a half-written file
        partial.write_bytes(body)
        partial.replace(target)
        if fmt == "optimade":
            return len(body.splitlines()) - 2  # after the header and the info line
        import pyarrow.parquet as pq

        return pq.read_metadata(path).num_rows

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


def _bounds(bounds: dict[str, Any]) -> str:
    """``min:max`` of a range (either end may be missing)."""
    low, high = bounds.get("min"), bounds.get("max")
    return f"{'' if low is None else low}:{'' if high is None else high}"
