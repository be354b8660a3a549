"""Webhook delivery: workers that send the outbox's messages, signed, to checked targets.

Owns: sending. What is in the outbox, and when a message is retried or given up, is
`core.outbox`'s (the rows are written by storage in the transaction that changed the
job, so a restart or a crash loses none). A delivery worker:

1. claims the most overdue delivery (`Storage.claim_delivery`: a lease, so one attempt
   is made by exactly one worker of any process; a worker killed mid-attempt loses its
   lease and the attempt counts as failed);
2. on its first attempt fixes the body (the job object as `render` shows it then), so
   every retry sends the same bytes under the same `webhook-id`;
3. checks the target (`core.webhook_targets`): the host is resolved and every address
   checked, and the request goes to the checked address (Host header and TLS SNI carry
   the name), so a DNS answer that changes between check and connect cannot redirect
   it; a refused target is never retried;
4. POSTs it signed per Standard Webhooks (`core.webhooks`, the tenant's secret), without
   following redirects, and reports the answer: 2xx delivered, 410 gone, anything else
   or a transport error failed (retried on the policy's schedule).

Idle workers wait on `wakeup` (set in process when a job change may have enqueued
something, and by Postgres NOTIFY from other processes; and due at the `next_at` of a
retry this process scheduled) or `poll_seconds`, whichever comes first. A worker survives whatever one delivery raises (`Cancelled` aside): it is
logged, and the delivery is left to its lease expiry.

httpx is imported when the first delivery is attempted, not with this module: the serving
process imports this module at startup, and httpx brings its command line's libraries
(rich, pygments, click) and httpcore, ~5.7 MB of RSS a gateway that sends no webhook does
not need (`new_client` is what the server gives; docs/performance.md).

Secrets: each tenant's `whsec_...` secret is created on first use and kept in storage
(it must be readable to sign); it is never logged, and error messages never carry it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio
from attrs import evolve

from adapters.clock import Clock
from adapters.observe import Observer, WebhookSent
from adapters.outage import Outage
from adapters.storage.base import Storage
from adapters.storage.outbox_sql import state, with_state
from adapters.storage.records import DeliveryRecord, JobRecord
from adapters.wakeup import Wakeup
from core import outbox, webhook_targets, webhooks

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("umg.webhooks")

Renderer = Callable[[JobRecord], dict[str, Any]]
Resolver = Callable[[str, int], Awaitable[list[webhook_targets.Address]]]
Pinned = tuple["httpx.URL", dict[str, str], dict[str, str]]
REQUEST_TIMEOUT = 15.0


async def resolve(host: str, port: int) -> list[webhook_targets.Address]:
    """Every address `host` resolves to (the system resolver, via Trio)."""
    infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def pinned(
    url: str, target: webhook_targets.Target, address: webhook_targets.Address | None
) -> Pinned:
    """The request URL, extra headers and extensions that send `url` to `address` (the
    checked one) while naming the original host in `Host` and the TLS SNI/certificate
    check; with no address (an allowlisted host), `url` as it is."""
    import httpx  # not at startup (the module docstring)

    original = httpx.URL(url)
    if address is None:
        return original, {}, {}
    headers = {"host": original.netloc.decode("ascii")}
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return original.copy_with(host=str(address)), headers, extensions


def new_client() -> httpx.AsyncClient:
    """The deliveries' HTTP client, made (and httpx imported) when the first is sent."""
    import httpx  # not at startup (the module docstring)

    return httpx.AsyncClient()


async def tenant_secret(storage: Storage, tenant: str) -> str:
    """The tenant's signing secret (`whsec_...`), created on first use (the API's
    `GET /v1/webhooks/secret` and `umg webhooks secret` show it)."""
    return await storage.webhook_secret(tenant, webhooks.new_secret(secrets.token_bytes(24)))


class Deliverer:
    def __init__(
        self,
        storage: Storage,
        clock: Clock,
        http: httpx.AsyncClient | Callable[[], httpx.AsyncClient] | None,
        *,
        render: Renderer,
        policy: outbox.DeliveryPolicy | None = None,
        targets: webhook_targets.TargetPolicy | None = None,
        resolver: Resolver = resolve,
        poll_seconds: float = 0.5,
    ) -> None:
        self.storage = storage
        self.clock = clock
        # the client, or how to make it when the first delivery is attempted
        self.http: httpx.AsyncClient | None = None if callable(http) else http
        self._make_http = http if callable(http) else None
        self.render = render
        self.policy = policy or outbox.DeliveryPolicy()
        self.targets = targets or webhook_targets.TargetPolicy()
        self.resolver = resolver
        self.poll_seconds = poll_seconds
        self.wakeup = Wakeup(clock)
        # (the job service gives its own, so one line covers every background worker)
        self.outage = Outage(clock, log, base=poll_seconds)
        self.observer: Observer | None = None  # told of each attempt (adapters/observe.py)

    async def secret(self, tenant: str) -> str:
        return await tenant_secret(self.storage, tenant)

    # -- workers -----------------------------------------------------------------------

    async def run(self, count: int) -> None:
        """Run `count` delivery workers until cancelled (a pending retry stays in the
        outbox: cancelling loses nothing)."""
        async with trio.open_nursery() as nursery:
            for n in range(count):
                nursery.start_soon(self._worker, f"d{n}-{secrets.token_hex(4)}")

    async def _worker(self, name: str) -> None:
        while True:
            seen = self.outage.outages
            try:
                worked = await self.deliver_one(name)
            except self.storage.errors as err:  # the database is away: one line, back off
                await trio.sleep(self.outage.failed(err, "claiming a webhook delivery"))
                continue
            except Exception:
                log.exception("webhook worker %s: a delivery broke; its lease will expire", name)
                worked = False
            else:
                self.outage.ok(seen)
            if not worked:
                await self.wakeup.wait(self.poll_seconds)

    async def deliver_one(self, worker: str) -> bool:
        """Claim one due delivery and attempt it; False when nothing was due."""
        rec = await self.storage.claim_delivery(worker, self.clock.epoch(), self.policy)
        if rec is None:
            return False
        if rec.status != "sending":  # a dead sender spent its last attempt
            log.warning("webhook %s given up: %s", rec.id, rec.last_error)
            return True
        if rec.body is None:
            rec = await self._with_body(rec)
        event, answered = await self._attempt(worker, rec)
        now = self.clock.epoch()

        def report(current: DeliveryRecord) -> DeliveryRecord:
            try:
                return with_state(current, outbox.step(state(current), event, now, self.policy), now)
            except outbox.LeaseLost:
                return current  # reclaimed meanwhile: this late report is dropped

        done = await self.storage.update_delivery(rec.id, report)
        self._tell(rec, event, answered, done)  # the attempt's one log line (adapters/request_log.py)
        if done is not None and done.status == "pending":
            self.wakeup.at(done.next_at)  # this process retries it when due
        return True

    async def _with_body(self, rec: DeliveryRecord) -> DeliveryRecord:
        job = await self.storage.get_job(rec.tenant, rec.job_id)
        rendered = self.render(job) if job is not None else {"id": rec.job_id, "object": "job"}
        body = json.dumps(rendered, separators=(",", ":"))

        def fix(current: DeliveryRecord) -> DeliveryRecord:
            return current if current.body is not None else evolve(current, body=body)

        fixed = await self.storage.update_delivery(rec.id, fix)
        return fixed if fixed is not None else evolve(rec, body=body)

    def _tell(self, rec: DeliveryRecord, event: outbox.DeliveryEvent, answered: int | None,
              done: DeliveryRecord | None) -> None:
        """One attempt's end (`rec` as claimed: its `attempts` counts this one) for the
        observers (adapters/request_log.py logs it, adapters/metrics.py counts it)."""
        if self.observer is None:
            return
        failure, detail = None, None
        if isinstance(event, outbox.Failed):
            failure = event.error
        elif isinstance(event, outbox.Refused):
            failure, detail = "refused", event.reason  # the host and why, never the URL
        self.observer.webhook_sent(WebhookSent(
            message_id=rec.id, job_id=rec.job_id, attempt=rec.attempts, status_code=answered,
            ok=failure is None, error=failure, detail=detail,
            gave_up=done is not None and done.status in ("given_up", "refused"),
        ))  # fmt: skip

    async def _attempt(
        self, worker: str, rec: DeliveryRecord
    ) -> tuple[outbox.DeliveryEvent, int | None]:
        """The attempt's event and the receiver's status code (None: no answer)."""
        assert rec.body is not None
        body = rec.body.encode()
        try:
            checked = await self._checked(rec.url)
        except OSError as err:  # the host did not resolve: retried like a transport error
            return outbox.Failed(worker, f"resolution failed ({type(err).__name__})"), None
        if isinstance(checked, str):
            return outbox.Refused(worker, checked), None
        import httpx  # not at startup (the module docstring); a dict look-up from then on

        if self.http is None and self._make_http is not None:
            self.http = self._make_http()
        if self.http is None:
            return outbox.Failed(worker, "no HTTP client"), None
        headers = webhooks.headers(await self.secret(rec.tenant), rec.id, int(self.clock.epoch()), body)
        headers["content-type"] = "application/json"
        target_url, extra, extensions = checked
        try:
            response = await self.http.post(
                target_url, content=body, headers={**headers, **extra}, extensions=extensions,
                timeout=REQUEST_TIMEOUT, follow_redirects=False,
            )  # fmt: skip
        except (httpx.HTTPError, OSError) as err:
            return outbox.Failed(worker, type(err).__name__), None
        status = response.status_code
        if 200 <= status < 300:
            return outbox.Delivered(worker), status
        if status == 410:
            return outbox.Gone(worker), status
        return outbox.Failed(worker, f"HTTP {status}"), status

    async def _checked(self, url: str) -> Pinned | str:
        """Where to send `url` (pinned to a checked address), or why it is refused."""
        target = webhook_targets.parse(url)
        if isinstance(target, str):
            return f"the URL {target}"
        if webhook_targets.is_allowlisted(target, self.targets):
            reason = webhook_targets.refusal(target, [], self.targets)
            return f"host {target.host} {reason}" if reason else pinned(url, target, None)
        addresses = await self.resolver(target.host, target.port)  # OSError: not resolved
        reason = webhook_targets.refusal(target, addresses, self.targets)
        if reason is not None:
            return f"host {target.host} {reason}"
        return pinned(url, target, addresses[0])
