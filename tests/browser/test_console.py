"""The console in a real headless Chromium (Debian's `chromium`, driven by Playwright).

A real `umg serve` process (mock mode, SQLite in a temp dir) on a free port; its first
start prints the development key, an admin key. The browser signs in with it, creates a
key on the Keys page, and the test makes requests with that key through the official
OpenAI SDK; they must appear on the usage chart and in the requests list with the cost
the answers reported; the key is revoked in the browser and its next SDK request is
refused; the Usage page's CSV downloads hold the same numbers. A tenant key sees only
its own tenant. Every page is checked for labelled form fields and text contrast, and a
screenshot of each page is saved under `artifacts/console/` (git-ignored).

No browser is downloaded: Playwright is pointed at `/usr/bin/chromium`. When Chromium or
Playwright is missing the tests are skipped, or FAIL when the `CI` environment variable
is set (`.ci/run` installs Chromium).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.billing import format_usd

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "console"
UMG = str(Path(sys.executable).parent / "umg")
KEY = re.compile(r"umg_live_[a-z2-7]{12}_[a-z2-7]+")
LISTENING = re.compile(r"Listening on (http://[\d.]+:\d+)")
SCRUB = ("DATABASE_URL", "PORT", "HOST", "UMG_CONFIG", "OPENAI_API_KEY", "OPENAI_BASE_URL",
         "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI is set: the browser tests must run; .ci/run installs chromium)")
    pytest.skip(what)


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        _missing("Chromium is not installed (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("Playwright is not installed (make .venv/.installed)")
    return path


class Gateway:
    def __init__(self, tmp: Path) -> None:
        self.url = ""  # known once it listens: `--port 0` binds any free port and says which
        env = {k: v for k, v in os.environ.items() if k not in SCRUB}
        env["MOCK_MODE"] = "true"
        self.out = (tmp / "serve.out").open("w+")
        self.proc = subprocess.Popen(
            [UMG, "serve", "--host", "127.0.0.1", "--port", "0",
             "--database-url", f"sqlite:///{tmp}/console.db", "--drain-seconds", "1"],
            stdout=self.out, stderr=subprocess.STDOUT, env=env,
        )
        self.admin_key = self._wait_ready()

    def _wait_ready(self) -> str:
        deadline = time.monotonic() + 60  # a bound on its start, not a speed check
        while time.monotonic() < deadline:
            self.out.seek(0)
            printed = self.out.read()
            found = KEY.search(printed)
            listening = LISTENING.search(printed)
            if found and listening and self.proc.poll() is None:
                self.url = listening.group(1)
                try:
                    if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                        return found.group(0)
                except httpx.HTTPError:
                    pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.out.seek(0)
        raise AssertionError(f"the gateway did not start: {self.out.read()}")

    def api(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {key}"}, timeout=30)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.out.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, chromium: str) -> Iterator[Gateway]:
    gw = Gateway(tmp_path_factory.mktemp("console"))
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def page(chromium: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        pg = context.new_page()
        problems: list[str] = []
        pg.on("pageerror", lambda err: problems.append(f"page error: {err}"))
        pg.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        pg.set_default_timeout(15000)
        yield pg
        context.close()
        browser.close()
        assert problems == [], problems


# ---- checks every page gets ---------------------------------------------------------

_CONTRAST_JS = """
() => {
  const rgb = (s) => { const m = s.match(/[\\d.]+/g); return m ? m.map(Number) : [0, 0, 0, 1]; };
  const lum = ([r, g, b]) => { const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const bg = (el) => { for (let e = el; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor);
    if (c.length < 4 || c[3] > 0.5) return c; } return [255, 255, 255]; };
  const bad = [];
  for (const el of document.querySelectorAll("body *")) {
    if (el.closest("svg") || !el.offsetParent) continue;
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own) continue;
    const s = getComputedStyle(el);
    const a = lum(rgb(s.color)), b = lum(bg(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const large = parseFloat(s.fontSize) >= 24 || (parseFloat(s.fontSize) >= 18.66 && Number(s.fontWeight) >= 700);
    const need = large ? 3 : 4.5;
    const dim = el.closest("button:disabled");
    if (ratio < need && !dim) bad.push(`${el.tagName}.${el.className} "${el.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}`);
  }
  return bad;
}
"""

_UNLABELLED_JS = """
() => [...document.querySelectorAll("input, select, textarea, button")]
  .filter((e) => e.offsetParent && !(e.labels && e.labels.length) && !e.getAttribute("aria-label") && !e.textContent.trim())
  .map((e) => e.outerHTML.slice(0, 80))
"""


def check_page(pg: Any, name: str) -> None:
    """Every visible field is labelled, text contrast is at least WCAG AA; screenshot."""
    assert pg.evaluate(_UNLABELLED_JS) == [], name
    assert pg.evaluate(_CONTRAST_JS) == [], name
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(pg: Any, gw: Gateway, key: str) -> None:
    pg.goto(f"{gw.url}/console")
    check_page(pg, "signin")
    pg.get_by_label("API key").fill(key)
    pg.get_by_label("API key").press("Enter")  # the keyboard submits the form
    pg.wait_for_selector("#nav:not([hidden])")


def go(pg: Any, link: str) -> None:
    """Open a page from the navigation with the keyboard."""
    pg.get_by_role("link", name=link, exact=True).focus()
    pg.keyboard.press("Enter")
    pg.wait_for_function("name => document.querySelector('#page').dataset.page === name", arg=link.lower())


# ---- the tests ----------------------------------------------------------------------


def test_admin_creates_a_key_sees_its_traffic_and_cost_then_revokes_it(page: Any, gateway: Gateway) -> None:
    import openai

    pg = page
    sign_in(pg, gateway, gateway.admin_key)
    assert "admin key" in pg.locator("#who").inner_text()
    stored = pg.evaluate("() => [sessionStorage.getItem('umg.console.key'), document.cookie, location.href]")
    assert stored[0] == gateway.admin_key and stored[1] == "" and gateway.admin_key not in stored[2]

    go(pg, "Keys")
    pg.get_by_label("Tenant").fill("acme")
    pg.get_by_label("Project").fill("web")
    pg.get_by_label("Name").fill("browser test")
    pg.get_by_label("Requests / min").fill("100")
    pg.get_by_label("Tokens / min").fill("100000")
    pg.get_by_label("Budget (USD)").fill("5")
    pg.get_by_role("button", name="Create key").click()
    plain = pg.locator("#new-key").inner_text().strip()
    assert KEY.fullmatch(plain), plain
    pg.locator("#key-list tr", has_text="browser test").wait_for()  # the list reloads after the key shows

    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=plain, max_retries=0)
    costs = []
    for text in ("first question here", "second one", "a third and last question"):
        answer = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": text}])
        costs.append(Decimal(answer.model_dump()["gateway"]["cost_usd"]))
    total = sum(costs, Decimal(0))
    assert total > 0

    go(pg, "Usage")
    pg.get_by_label("Time range").select_option("1h")
    pg.get_by_label("Tenant (blank: all)").fill("acme")
    pg.get_by_role("button", name="Show").click()
    pg.wait_for_function("() => document.querySelector('#usage-out .note')?.textContent.includes('tenant acme')")
    bars = pg.locator("#chart-requests rect[data-group='gpt-4o-mini']")
    assert bars.count() == 1
    assert "3" in bars.first.locator("title").text_content()
    pg.locator("#chart-cost summary").click()
    cost_table = pg.locator("#chart-cost table tbody tr")
    assert cost_table.count() == 1
    cells = cost_table.first.locator("td").all_inner_texts()
    assert cells[1] == "gpt-4o-mini" and cells[2] == "3" and Decimal(cells[5].lstrip("$")) == total
    assert Decimal(pg.locator(".stat", has_text="Cost").locator(".v").inner_text().lstrip("$")) == total
    # The numbers behind the charts as CSV files (each button named for its chart, the
    # second one pressed from the keyboard).
    with pg.expect_download() as usage_csv:
        pg.get_by_role("button", name="Download CSV of cost (usd) per hour").click()
    header, *lines = Path(usage_csv.value.path()).read_text().splitlines()
    assert header == "at,group,requests,errors,input_tokens,output_tokens,total_tokens,cost_usd"
    assert len(lines) == 1 and lines[0].split(",")[1:3] == ["gpt-4o-mini", "3"]
    assert Decimal(lines[0].split(",")[-1]) == total
    usage_csv.value.save_as(ARTIFACTS / "usage.csv")
    with pg.expect_download() as latency_csv:
        pg.get_by_role("button", name="Download CSV of latency percentiles per hour").focus()
        pg.keyboard.press("Enter")
    header, *lines = Path(latency_csv.value.path()).read_text().splitlines()
    assert header == "at,requests,p50_ms,p90_ms,p95_ms,p99_ms"
    assert len(lines) == 1 and lines[0].split(",")[1] == "3" and float(lines[0].split(",")[2]) > 0
    check_page(pg, "usage")

    go(pg, "Requests")
    pg.get_by_label("Tenant").fill("acme")
    pg.get_by_role("button", name="Filter").click()
    pg.wait_for_function("() => document.querySelectorAll('#requests-table tr.request').length === 3")
    shown = sorted(Decimal(c.lstrip("$")) for c in pg.locator("#requests-table tr.request td.cost").all_inner_texts())
    assert shown == sorted(costs)
    toggle = pg.locator("#requests-table tr.request").first.get_by_role("button", name="Attempts")
    toggle.focus()
    pg.keyboard.press("Enter")
    assert toggle.get_attribute("aria-expanded") == "true"
    details = pg.locator("#requests-table tr.row-details:not([hidden])")
    assert "openai/gpt-4o-mini" in details.inner_text() and "ok" in details.inner_text()
    check_page(pg, "requests")

    go(pg, "Keys")
    row = pg.locator("#key-list tr", has_text="browser test")
    assert f"${format_usd(total)} of $5 / month" in row.inner_text()
    row.get_by_role("button", name=re.compile("Revoke")).click()
    row.get_by_role("button", name=re.compile("Revoke")).click()  # "Confirm revoke"
    pg.wait_for_function("() => [...document.querySelectorAll('#key-list tr')].some(r => r.textContent.includes('browser test') && r.textContent.includes('revoked'))")
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "again"}])
    check_page(pg, "keys")

    with gateway.api(gateway.admin_key) as api:  # a failing deployment, so the page has a breaker to show
        for _ in range(6):
            api.post("/v1/chat/completions", headers={"x-umg-mock-scenario": "fail=500;fail_providers=anthropic"},
                     json={"model": "claude-3.5-haiku", "messages": [{"role": "user", "content": "x"}]})
    go(pg, "Providers")
    pg.wait_for_selector("#providers-table tbody tr")
    assert pg.locator("#providers-table .badge.open").count() >= 1
    first = pg.locator("p.note .live").locator("..").inner_text()
    pg.wait_for_function("t => document.querySelector('p.note .live').parentElement.textContent !== t", arg=first, timeout=8000)
    check_page(pg, "providers")

    go(pg, "Jobs")
    pg.get_by_label("Prompt").fill("summarise the gateway")
    pg.get_by_role("button", name="Queue job").click()
    pg.wait_for_selector("#job-detail h3")
    with gateway.api(gateway.admin_key) as api:
        slow = api.post("/v1/jobs", json={"request": {"model": "gpt-4o-mini", "input": "slow",
                                                      "metadata": {"mock_scenario": "latency_ms=30000"}}}).json()
    pg.get_by_label("Status").select_option("")
    pg.wait_for_selector(f"#jobs-list button:text('{slow['id']}')")
    pg.locator(f"#jobs-list button:text('{slow['id']}')").click()
    pg.get_by_role("button", name="Cancel job").click()
    pg.wait_for_function("() => document.querySelector('#job-detail .badge')?.textContent === 'canceled'")
    # The first job's result: once it has run (polled through the API, untimed), its
    # detail shows the answer.
    with gateway.api(gateway.admin_key) as api:
        first_job = next(j for j in api.get("/v1/jobs", params={"limit": 50}).json()["data"] if j["id"] != slow["id"])
        while api.get(f"/v1/jobs/{first_job['id']}").json()["status"] in ("queued", "running"):
            time.sleep(0.2)
    pg.locator(f"#jobs-list button:text('{first_job['id']}')").click()
    pg.wait_for_function("id => document.querySelector('#job-title')?.textContent === `Job ${id}`", arg=first_job["id"])
    assert pg.locator("#job-detail .badge").inner_text() == "succeeded"
    assert "Mock answer" in pg.locator("#job-detail .answer").inner_text()
    check_page(pg, "jobs")

    go(pg, "Playground")
    pg.get_by_label("Model").select_option("claude-3.5-sonnet")
    pg.get_by_label("Routing strategy").select_option("latency")
    pg.get_by_label("Prompt").fill("stream me a short answer")
    pg.get_by_role("button", name="Send (streamed)").click()
    pg.wait_for_function("() => document.querySelector('#p-gateway').textContent.includes('cost_usd')")
    assert "Mock answer" in pg.locator("#p-answer").inner_text()
    block = pg.locator("#p-gateway").inner_text()
    assert '"routing": "latency"' in block and '"provider"' in block and '"attempts"' in block
    check_page(pg, "playground")

    pg.get_by_role("button", name="Sign out").click()
    assert pg.evaluate("() => sessionStorage.getItem('umg.console.key')") is None
    assert pg.get_by_label("API key").is_visible()


def test_a_tenant_key_sees_only_its_own_tenant(page: Any, gateway: Gateway) -> None:
    with gateway.api(gateway.admin_key) as api:
        alpha = api.post("/v1/admin/keys", json={"tenant": "alpha", "project": "a1", "name": "alpha key"}).json()["key"]
        beta = api.post("/v1/admin/keys", json={"tenant": "beta", "project": "b1"}).json()["key"]
    for key, n in ((alpha, 2), (beta, 3)):
        with gateway.api(key) as api:
            for i in range(n):
                assert api.post("/v1/chat/completions", json={"model": "gpt-4.1-mini",
                                "messages": [{"role": "user", "content": f"q {i}"}]}).status_code == 200
    pg = page
    sign_in(pg, gateway, alpha)
    assert "tenant alpha" in pg.locator("#who").inner_text() and "tenant key" in pg.locator("#who").inner_text()
    assert not pg.get_by_role("link", name="Keys", exact=True).is_visible()
    assert not pg.get_by_role("link", name="Providers", exact=True).is_visible()
    pg.wait_for_selector("#usage-out .stat")
    assert pg.locator(".stat", has_text="Requests").locator(".v").inner_text() == "2"
    assert pg.get_by_label("Tenant (blank: all)").count() == 0
    check_page(pg, "usage-tenant")
    go(pg, "Requests")
    pg.wait_for_function("() => document.querySelectorAll('#requests-table tr.request').length === 2")
    tenants = {t for t in pg.locator("#requests-table tr.request td:nth-child(2)").all_inner_texts()}
    assert tenants == {"alpha"}
    pg.goto(f"{gateway.url}/console#keys")  # not offered, and refused by the server too
    pg.wait_for_function("() => document.querySelector('#page').dataset.page === 'usage'")
    assert pg.evaluate("() => sessionStorage.getItem('umg.console.key')") == alpha
    with gateway.api(alpha) as api:
        assert api.get("/v1/admin/keys").status_code == 403
    check_page(pg, "requests-tenant")
