"""The dashboard in headless Chromium, against a real run on Redis and the real ``pdata dashboard``.

What a user does with it: open the printed URL (no console error, nothing asked of any other address),
read the counts (they match coordination), page and filter the table, reach a failed unit's reason and
stderr in two clicks, see new work arrive without reloading. And what an intruder tries: no token, a
wrong token, a token's prefix (403 for the page, the API and the assets alike), HTML in a unit's name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pilotdata.inspect import Inspector
from tests import servers
from tests.dashboard.conftest import (
    HTML_NAME,
    DashRun,
    DashServer,
    http_get,
    listening_sockets,
    make_run,
    start_dashboard,
)
from tests.servers import wait_until

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def dash_run(redis_server: servers.RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashRun]:
    run = make_run(redis_server, tmp_path_factory.mktemp("dash-run"))
    yield run
    run.pdata("pilot", "stop", "--all", code=None)


@pytest.fixture(scope="module")
def dash(dash_run: DashRun) -> Iterator[DashServer]:
    server = start_dashboard(dash_run.env, dash_run.home, "--port", "0", "--interval", "0.5")
    yield server
    server.stop()


@dataclass
class Page:
    """A browser page on the dashboard, with what went wrong on it collected."""

    page: Any
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def loaded(self) -> None:
        """Wait until every panel has been drawn once."""
        self.page.wait_for_selector("body[data-loaded-generation]", timeout=30_000)

    def text(self, selector: str) -> str:
        return str(self.page.inner_text(selector)).strip()


@pytest.fixture
def page(browser: Any, dash: DashServer) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    p = Page(context.new_page())
    p.page.on("console", lambda m: p.errors.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
              else None)
    p.page.on("pageerror", lambda e: p.errors.append(f"page error: {e}"))
    p.page.on("requestfailed", lambda r: p.errors.append(f"request failed: {r.url} {r.failure}"))
    p.page.on("request", lambda r: p.requests.append(r.url))
    p.page.goto(dash.url)
    p.loaded()
    yield p
    context.close()
    assert p.errors == [], p.errors


def _number(text: str) -> int:
    return int(text.replace(",", "")) if text.strip() not in ("", "-") else 0


def test_the_page_loads_without_console_errors_and_asks_only_its_own_origin(page: Page, dash: DashServer) -> None:
    page.page.wait_for_function("document.querySelectorAll('#cus-table tbody tr[data-cu]').length > 0")
    assert page.errors == []
    assert page.requests, "the page made no request"
    outside = [u for u in page.requests if not u.startswith(dash.url)]
    assert outside == [], f"requests outside {dash.url}: {outside}"
    assert any(u.endswith("static/vendor/chart.umd.min.js") for u in page.requests)
    assert page.page.evaluate("typeof Chart") == "function"  # the vendored library loaded and ran
    assert page.page.locator("#throughput-chart").bounding_box()["height"] > 100


def test_counts_pilots_and_bytes_match_coordination_and_the_query_layer(page: Page, dash_run: DashRun) -> None:
    def shown() -> dict[str, int]:
        cells = page.page.locator('#counts-table tfoot td[data-place="*"]')
        out = {}
        for i in range(cells.count()):
            cell = cells.nth(i)
            state = cell.get_attribute("data-state")
            if state != "all":
                out[state] = _number(cell.inner_text())
        return out

    truth = dash_run.coordination_counts()
    assert truth["Done"] == 25 and truth["Failed"] == 3  # 24 tasks and the HTML-named one; two bad, one missing
    wait_until(lambda: shown() == dict(truth), 20, f"the page's counts to equal coordination's {dict(truth)}")
    row = page.page.locator(f'#counts-table tbody tr[data-place="{dash_run.pilot}"]')
    assert _number(row.locator('td[data-state="all"]').inner_text()) == sum(truth.values())
    pilot_row = page.page.locator(f'#pilots-table tr[data-pilot="{dash_run.pilot}"]')
    cells = [c.strip() for c in pilot_row.locator("td").all_inner_texts()]
    assert cells[1:6] == ["Running", "site-a", "2", "0", "2"]  # state, site, slots, busy, idle
    # bytes: the one accounting, as the query layer sums it, on the page
    inspector = Inspector.open(dash_run.env["PDATA_URL"], namespace=dash_run.env["PDATA_NAMESPACE"],
                               history_url=dash_run.env["PDATA_HISTORY_URL"])
    try:
        expected = inspector.bytes(dash_run.run).as_dict()
    finally:
        inspector.close()
    api = json.loads(page.page.evaluate("fetch('api/bytes').then(r => r.text())"))
    assert {k: api["total"][k] for k in expected} == expected
    assert expected["uploaded"] == 300_000 and expected["linked"] + expected["cache_hit"] == 24 * 300_000
    total_row = page.page.locator('#bytes-table tr[data-name="*"]')
    assert total_row.locator('td[data-category="uploaded"]').inner_text() == "300.0 kB"
    assert total_row.locator('td[data-category="saved"]').inner_text() == "7.2 MB"


def test_the_table_pages_and_filters(page: Page, dash_run: DashRun) -> None:
    p = page.page

    def ids() -> list[str]:
        return [str(x) for x in p.locator("#cus-table tbody tr[data-cu]").evaluate_all(
            "rows => rows.map(r => r.dataset.cu)")]

    def info() -> str:  # "1-10 of 28" with an en dash
        return page.text("#page-info").replace("\u2013", "-")

    p.select_option("#f-limit", "10")
    wait_until(lambda: info() == "1-10 of 28", 10, "a first page of 10")
    first = ids()
    assert first == [dash_run.ids[f"task-{i:02d}"] for i in range(10)]  # submission order
    p.click("#page-next")
    wait_until(lambda: info() == "11-20 of 28", 10, "the second page")
    assert ids() == [dash_run.ids[f"task-{i:02d}"] for i in range(10, 20)]
    p.click("#page-next")
    wait_until(lambda: info() == "21-28 of 28", 10, "the last page")
    assert p.locator("#page-next").is_disabled()
    p.click("#page-prev")
    wait_until(lambda: info() == "11-20 of 28", 10, "back to the second page")
    p.click("#page-first")
    wait_until(lambda: info() == "1-10 of 28", 10, "back to the first page")
    assert ids() == first
    p.select_option("#f-state", "Failed")
    wait_until(lambda: info() == "1-3 of 3", 10, "the failed units")
    assert set(ids()) == {dash_run.ids["bad-1"], dash_run.ids["bad-2"], dash_run.ids["missing"]}
    assert set(p.locator("#cus-table tbody tr").evaluate_all("rows => rows.map(r => r.dataset.state)")) == {"Failed"}
    p.select_option("#f-state", "")
    p.fill("#f-name", "TASK-1*")  # a glob, any case
    p.click("#f-apply")
    wait_until(lambda: info() == "1-10 of 10", 10, "the units named task-1*")
    assert ids() == [dash_run.ids[f"task-1{i}"] for i in range(10)]
    p.fill("#f-name", "")
    p.fill("#f-site", "site-b")
    p.click("#f-apply")
    wait_until(lambda: info() == "0-0 of 0", 10, "no unit at site-b")
    assert "no ComputeUnit matches" in page.text("#cus-table tbody")
    p.click("#f-reset")
    wait_until(lambda: info() == "1-50 of 28" or info() == "1-28 of 28", 10, "every unit after reset")
    p.check("#f-newest")
    wait_until(lambda: ids()[:1] == [dash_run.ids["html"]], 10, "the newest unit first")


def test_a_failed_units_reason_and_stderr_in_two_clicks(page: Page, dash_run: DashRun) -> None:
    p = page.page
    bad = dash_run.ids["bad-1"]
    # click 1: the Failed total in the counts; click 2: the unit in the table it filtered
    p.click('#counts-table tfoot td[data-state="Failed"] a')
    wait_until(lambda: page.text("#page-info").endswith(" of 3"), 10, "the table filtered to Failed")
    p.click(f'#cus-table tr[data-cu="{bad}"] a.cu-link')
    p.wait_for_selector("#details:not([hidden])")
    wait_until(lambda: page.text('#details dd[data-field="reason"]') == "exit code 7", 10, "the reason")
    assert page.text("#details-stderr") == "doomed"
    assert page.text('#details dd[data-field="exit code"]') == "7"
    assert bad in page.text("#details-title")
    assert p.evaluate("location.hash") == f"#cu={bad}"
    p.click("#details-close")
    p.wait_for_selector("#details", state="hidden")
    # the failures panel: every reason with its count; one click on an example opens its details
    groups = p.locator("#failures-table tbody tr.failure")
    reasons = {groups.nth(i).locator("td.reason").inner_text(): _number(groups.nth(i).locator("td.num").inner_text())
               for i in range(groups.count())}
    assert reasons == {"exit code 7": 2, "executable not found: /no/such/program": 1}
    p.click(f'#failures-table a.cu-link[data-cu="{dash_run.ids["missing"]}"]')
    wait_until(lambda: page.text('#details dd[data-field="reason"]') == "executable not found: /no/such/program", 10,
               "the missing program's reason")
    assert "never started" in page.text("#details-stderr")


def test_html_in_a_name_is_shown_as_text_and_never_runs(page: Page, dash_run: DashRun) -> None:
    p = page.page
    row = p.locator(f'#cus-table tr[data-cu="{dash_run.ids["html"]}"]')
    row.wait_for()
    assert row.locator("td").nth(1).inner_text() == HTML_NAME
    assert p.locator("#cus-table img").count() == 0
    row.locator("a.cu-link").click()
    wait_until(lambda: HTML_NAME in page.text("#details-title"), 10, "the details")
    assert p.evaluate("document.body.dataset.pwned") is None


def test_the_token_is_required_by_pages_api_and_assets(dash: DashServer) -> None:
    token = dash.token
    wrong = ("x" if token[0] != "x" else "y") + token[1:]
    paths = ["", "api/meta", "api/counts", "api/cus?limit=5", "static/dashboard.js", "static/vendor/chart.umd.min.js"]
    for path in paths:
        status, headers, _ = http_get(f"{dash.url}{path}")
        assert status == 200, path
        assert headers["referrer-policy"] == "no-referrer" and "default-src 'self'" in headers[
            "content-security-policy"]
        for bad in (f"{dash.origin}/{path}", f"{dash.origin}/{wrong}/{path}", f"{dash.origin}/{token[:-1]}/{path}",
                    f"{dash.origin}/{token}x/{path}", f"{dash.origin}/static/{path}"):
            status, headers, body = http_get(bad)
            assert status == 403, bad
            assert token.encode() not in body and b"access token" in body
            assert headers["referrer-policy"] == "no-referrer"
    status, headers, _ = http_get(f"{dash.origin}/{token}")  # without the slash: sent to the page
    assert status == 200
    status, _, body = http_get(f"{dash.url}api/cus?state=Finished")
    assert status == 400 and json.loads(body)["field"] == "state"
    status, _, body = http_get(f"{dash.url}api/cus?limit=0")
    assert status == 400 and json.loads(body)["field"] == "limit"
    status, _, body = http_get(f"{dash.url}api/cus?after=nonsense")
    assert status == 400 and json.loads(body)["field"] == "after"
    status, _, body = http_get(f"{dash.url}api/counts?run=no-such-run")
    assert status == 404 and "no-such-run" in json.loads(body)["error"]
    status, _, body = http_get(f"{dash.url}api/cu/cu-nope")
    assert status == 404 and "cu-nope" in json.loads(body)["error"]


def test_it_listens_on_the_address_asked_and_nothing_else(dash: DashServer) -> None:
    port = int(dash.origin.rsplit(":", 1)[1])
    assert dash.url.startswith("http://127.0.0.1:")
    assert listening_sockets(dash.proc.pid) == [("127.0.0.1", port)]


def test_new_work_appears_without_reloading(page: Page, dash_run: DashRun, tmp_path: Path) -> None:
    p = page.page
    before = _number(p.inner_text('#counts-table tfoot td[data-state="Done"]'))
    generation = int(p.evaluate("document.body.dataset.loadedGeneration"))
    cu = dash_run.pdata("submit", "--run", dash_run.run, "--name", "late", "--", "/bin/true").stdout.strip()
    dash_run.pdata("wait", cu, "--timeout", "60")
    wait_until(lambda: _number(p.inner_text('#counts-table tfoot td[data-state="Done"]')) == before + 1, 20,
               "the new unit to be counted Done on the page")
    assert int(p.evaluate("document.body.dataset.loadedGeneration")) > generation
    assert re.search(r"refreshed \d\d:\d\d:\d\d", page.text("#refresh"))
