"""The fault run: N requests through two faulty upstreams, then the ledger is audited.

Owns: `make soak` (and the short version in `tests/server/test_soak.py`). The gateway runs
in live mode with OpenAI pointed at one fake provider and Anthropic at another
(`tests/fakes`, real sockets), each faulting a share of its requests at random (`Chaos`:
500, 429 with retry-after, reset, stall, mid-stream cut or error event). A bounded client
(at most `concurrency` requests in flight) sends `requests` requests over the six
surfaces (Chat, Responses and Messages, each whole and streamed) for an OpenAI and a
Claude model. Then it checks, and prints:

- every request ended in a success (the whole answer) or an explicit error (an error
  status with an error body, or a stream that ends with an error event); a dropped
  connection, a stream that stops without its end or error event, or a 200 without the
  answer is a failure of the run;
- the ledger has exactly one row per request, none left `in_progress`, and as many `ok`
  rows as successes;
- every row's cost is price x tokens (computed here from the catalog price, with
  Decimal): exactly, at the price of the deployment it names, for a row with one attempt;
  0 for a row with no deployment. A row whose attempts reached several deployments also
  bills the usage a failed attempt had reported (say the input tokens of a stream cut
  before its first chunk, at that deployment's price) while naming only the last
  deployment, so its cost must lie between the cheapest and the dearest price x tokens
  over the model's candidate deployments.

Run: `python -m tests.soak [--requests N] [--concurrency C] [--rate R] [--seed S]`; it
exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import httpx
import trio
from attrs import define, field

from adapters.config.loader import load_settings
from adapters.storage.records import UsageRecord
from core.catalog import Catalog, Price
from tests.fakes import Chaos, running_fake_provider
from tests.server.conftest import start_gateway

CONFIG = """
[attempts]
base_backoff = 0.01
max_backoff = 0.05
max_retry_after = 2.0
attempt_timeout = 5.0
total_timeout = 15.0

[timeouts]
connect = 2.0
first_byte = 0.5
idle = 0.5
total = 15.0

[health]
cooldown = 0.2
"""
MODELS = ("gpt-4o-mini", "claude-3.5-haiku")
SURFACES = ("chat", "chat_stream", "responses", "responses_stream", "messages", "messages_stream")
TEXT = "soak the gateway with faults"


@define
class Report:
    requests: int
    outcomes: Counter[str] = field(factory=Counter)  # success | explicit_error | broken
    broken: list[str] = field(factory=list)  # what a broken outcome looked like
    rows: int = 0
    rows_by_status: Counter[str] = field(factory=Counter)
    cost_mismatches: list[str] = field(factory=list)
    exact_rows: int = 0  # rows whose cost was checked exactly (one deployment)
    injected: Counter[str] = field(factory=Counter)
    upstream_requests: int = 0
    total_cost: Decimal = Decimal(0)

    @property
    def problems(self) -> list[str]:
        found = [f"broken answer: {b}" for b in self.broken[:10]]
        if self.rows != self.requests:
            found.append(f"{self.rows} ledger rows for {self.requests} requests")
        if self.rows_by_status["in_progress"]:
            found.append(f"{self.rows_by_status['in_progress']} rows left in_progress")
        if self.rows_by_status["ok"] != self.outcomes["success"]:
            found.append(f"{self.rows_by_status['ok']} ok rows for {self.outcomes['success']} successes")
        return found + self.cost_mismatches[:10]

    def lines(self) -> list[str]:
        return [
            f"requests: {self.requests} (upstream calls: {self.upstream_requests})",
            f"faults injected: {dict(sorted(self.injected.items()))}",
            f"outcomes: success {self.outcomes['success']}, explicit error "
            f"{self.outcomes['explicit_error']}, broken {self.outcomes['broken']}",
            f"ledger rows: {self.rows} ({dict(sorted(self.rows_by_status.items()))})",
            f"rows whose cost != price x tokens: {len(self.cost_mismatches)} "
            f"({self.exact_rows} checked exactly, {self.rows - self.exact_rows} within bounds)",
            f"total cost: {self.total_cost} USD",
            "OK" if not self.problems else "FAILED: " + "; ".join(self.problems),
        ]


# ---- one request --------------------------------------------------------------------------


def _body(surface: str, model: str) -> tuple[str, dict[str, Any]]:
    stream = surface.endswith("_stream")
    if surface.startswith("chat"):
        body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": TEXT}]}
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        return "/v1/chat/completions", body
    if surface.startswith("responses"):
        return ("/v1/responses/stream" if stream else "/v1/responses"), {"model": model, "input": TEXT}
    body = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": TEXT}]}
    return "/v1/messages", body | ({"stream": True} if stream else {})


def _events(text: str) -> list[tuple[str, str]]:
    """(event name or "", data) of an SSE body."""
    out: list[tuple[str, str]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = "", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            out.append((name, "\n".join(data)))
    return out


def _stream_outcome(surface: str, text: str) -> str:
    events = _events(text)
    names = [n for n, _ in events]
    datas = [d for _, d in events]
    if surface == "chat_stream":
        if any('"error"' in d and d.startswith('{"error"') for d in datas):
            return "explicit_error"
        said = "".join(
            c.get("delta", {}).get("content") or ""
            for d in datas if d != "[DONE]" for c in json.loads(d).get("choices", [])
        )
        return "success" if datas[-1:] == ["[DONE]"] and "Echo:" in said else "broken"
    if surface == "responses_stream":
        if names and names[-1] in ("response.failed", "error"):
            return "explicit_error"
        return "success" if names[-1:] == ["response.completed"] else "broken"
    if names and names[-1] == "error":
        return "explicit_error"
    return "success" if names[-1:] == ["message_stop"] else "broken"


def _json_outcome(status: int, body: Any) -> str:
    if status == 200:
        text = json.dumps(body)
        return "success" if "Echo:" in text else "broken"
    error = body.get("error") if isinstance(body, dict) else None
    if status >= 400 and isinstance(error, dict) and error.get("message"):
        return "explicit_error"
    return "broken"


async def one_request(client: httpx.AsyncClient, n: int) -> tuple[str, str]:
    """(outcome, what it looked like)."""
    surface, model = SURFACES[n % len(SURFACES)], MODELS[(n // len(SURFACES)) % len(MODELS)]
    path, body = _body(surface, model)
    try:
        r = await client.post(path, json=body)
    except httpx.HTTPError as err:
        return "broken", f"{surface} {model}: {type(err).__name__}"
    if r.status_code == 200 and surface.endswith("_stream"):
        outcome = _stream_outcome(surface, r.text)
    else:
        try:
            parsed = r.json()
        except ValueError:
            parsed = None
        outcome = _json_outcome(r.status_code, parsed)
    return outcome, f"{surface} {model}: {r.status_code} {r.text[-200:]!r}"


# ---- the audit ----------------------------------------------------------------------------


def cost_range(row: UsageRecord, catalog: Catalog) -> tuple[Decimal, Decimal]:
    """The (lowest, highest) cost the row may have: one value unless attempts spanned
    several deployments (see the module docstring)."""
    if row.deployment is None:
        return Decimal(0), Decimal(0)
    if row.attempts <= 1:
        deployments = {d.id: d for m in catalog.models.values() for d in m.deployments}
        exact = price_times_tokens(row, deployments[row.deployment].price)
        return exact, exact
    costs = [price_times_tokens(row, d.price) for d in catalog.candidates(row.model)]
    return min(costs), max(costs)


def price_times_tokens(row: UsageRecord, price: Price) -> Decimal:
    """price x tokens, per class, per 1M tokens, rounded once to 1e-10 USD (docs/api.md)."""
    cached = price.cached_input if price.cached_input is not None else price.input
    write = price.cache_write if price.cache_write is not None else price.input
    total = (
        Decimal(row.input_tokens) * price.input
        + Decimal(row.cached_input_tokens) * cached
        + Decimal(row.cache_write_tokens) * write
        + Decimal(row.output_tokens) * price.output
    ) / 1_000_000
    return total.quantize(Decimal("1e-10"), rounding=ROUND_HALF_EVEN)


async def run_soak(
    requests: int, *, concurrency: int = 16, rate: float = 0.3, seed: int = 1,
    workdir: Path | None = None,
) -> Report:
    report = Report(requests)
    with tempfile.TemporaryDirectory() as scratch:
        base = workdir or Path(scratch)
        async with running_fake_provider() as openai_fake, running_fake_provider() as anthropic_fake:
            openai_fake.chaos = Chaos(rate=rate, seed=seed)
            anthropic_fake.chaos = Chaos(rate=rate, seed=seed + 1)
            config = base / "soak.toml"
            config.write_text(CONFIG)
            settings = load_settings({
                "DATABASE_URL": f"sqlite:///{base}/soak.db",
                "UMG_CONFIG": str(config),
                "OPENAI_API_KEY": "sk-soak-openai-0000000000",
                "OPENAI_BASE_URL": openai_fake.openai_base_url,
                "ANTHROPIC_API_KEY": "sk-ant-soak-0000000000",
                "ANTHROPIC_BASE_URL": anthropic_fake.base_url,
            })
            async with trio.open_nursery() as nursery:
                gw = await start_gateway(nursery, settings)
                limiter = trio.CapacityLimiter(concurrency)

                async def send(n: int, client: httpx.AsyncClient) -> None:
                    async with limiter:
                        outcome, seen = await one_request(client, n)
                    report.outcomes[outcome] += 1
                    if outcome == "broken":
                        report.broken.append(seen)

                client = httpx.AsyncClient(
                    base_url=gw.url, headers={"authorization": f"Bearer {gw.key}"}, timeout=60.0,
                    limits=httpx.Limits(max_connections=concurrency),
                )
                async with client, trio.open_nursery() as senders:
                    for n in range(requests):
                        senders.start_soon(send, n, client)
                # stream rows are written by the producer; give the last ones a moment
                storage, catalog = gw.services.storage, gw.services.gateway.catalog
                now = datetime.now(UTC)
                with trio.move_on_after(10):
                    while await storage.usage_count() < requests:
                        await trio.sleep(0.05)
                rows = await storage.usage_rows("t1", now - timedelta(days=1), now + timedelta(days=1))
                gw.stop.set()
            for fake in (openai_fake, anthropic_fake):
                assert fake.chaos is not None
                report.injected.update(fake.chaos.counts)
                report.upstream_requests += len(fake.requests)
    report.rows = len(rows)
    report.rows_by_status.update(r.status for r in rows)
    for row in rows:
        low, high = cost_range(row, catalog)
        report.total_cost += row.cost
        report.exact_rows += low == high
        if not low <= row.cost <= high:
            report.cost_mismatches.append(f"{row.request_id}: cost {row.cost} not in [{low}, {high}]")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=0.3, help="share of upstream calls faulted")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    report = trio.run(
        lambda: run_soak(args.requests, concurrency=args.concurrency, rate=args.rate, seed=args.seed)
    )
    for line in report.lines():
        print(line)
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
