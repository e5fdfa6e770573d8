"""The dashboard in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium)
against a real `spoolq node`. Screenshots go to a temp dir printed at the start (look at them)."""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import wait_for
from .nodes import NodeProc

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
if not (CHROMIUM and DRIVER):
    pytest.skip("chromium and chromium-driver are not installed (Debian: apt-get install chromium chromium-driver)",
                allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

ADMIN = "dashboard-admin-token-0123456789"
CONFIG = f"""
[node]
history_interval = 0.5
sweep_interval = 0.2
[tokens.ops]
token = "{ADMIN}"
scopes = ["admin", "send", "consume"]
"""

SHOTS = Path(tempfile.mkdtemp(prefix="spoolq-dashboard-shots-"))
print(f"\ndashboard screenshots: {SHOTS}")


def api(url: str, method: str = "GET", body: Any = None, raw: bytes | None = None, query: str = "") -> Any:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url + query, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read()
    return json.loads(text) if text else None


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProc]:
    with NodeProc(tmp_path / "spool", config=CONFIG) as n:
        yield n


@pytest.fixture
def browser() -> Iterator[Any]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--no-first-run", "--disable-extensions"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console errors, CSP violations included
    try:
        drv = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=opts)
    except WebDriverException as e:
        pytest.fail(f"chromium is installed but does not start: {e.msg}")
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()


def shot(drv: Any, name: str) -> Path:
    path = SHOTS / f"{name}.png"
    drv.save_screenshot(str(path))
    return path


def find(drv: Any, css: str, timeout: float = 20.0) -> Any:
    """The first element matching ``css`` once it is displayed."""
    def visible() -> Any:
        els = [e for e in drv.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()]
        return els[0] if els else None

    return wait_for(visible, timeout, 0.05)


def text_of(drv: Any, css: str) -> str:
    """The text of the first element matching ``css``, looked up afresh (the overview is redrawn at
    every poll, so a reference to one of its elements goes stale)."""
    return str(drv.execute_script("var e=document.querySelector(arguments[0]);return e?e.innerText:''", css))


def send(url: str, channel: str, n: int, **opts: Any) -> list[str]:
    out = api(f"{url}/v1/channels/{channel}/messages", "POST",
              body={"messages": [{"body": f"{channel} message {i}", **opts} for i in range(n)]})
    return list(out["ids"])


def test_loads_with_a_token_and_shows_the_channels(node: NodeProc, browser: Any) -> None:
    send(node.url, "orders", 3)
    send(node.url, "emails", 2, delay=3600)
    browser.get(f"{node.url}/ui/#token={ADMIN}")
    # (a sample may have been taken between the two sends: wait for one with both)
    wait_for(lambda: text_of(browser, 'tr[data-channel="orders"] td.depth') == "3"
             and text_of(browser, 'tr[data-channel="emails"] td.depth') == "2", 20, 0.05)
    assert "node " in text_of(browser, "#node")
    # the token left the address bar and lives in this tab's session storage only
    assert "token" not in browser.current_url
    assert browser.execute_script("return sessionStorage.getItem('spoolq.token')") == ADMIN
    assert browser.execute_script("return localStorage.length") == 0
    assert not browser.find_elements(By.CSS_SELECTOR, "#error:not([hidden])")
    shot(browser, "overview")
    # nothing the page does breaks its own Content-Security-Policy, and nothing fails in the console
    problems = [e["message"] for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert not problems, problems
    # a reload keeps working from session storage
    browser.refresh()
    find(browser, 'tr[data-channel="orders"]')
    # browse a channel: the messages are listed with state and preview
    browser.get(f"{node.url}/ui/#/channel/orders")
    wait_for(lambda: "Channel orders" in text_of(browser, "main section.card h2"), 20, 0.05)
    shot(browser, "channel")
    # the token is never written where the node logs (it has no access log; its log must not hold it)
    assert ADMIN not in node.log()


def test_a_chart_updates_when_messages_are_sent(node: NodeProc, browser: Any) -> None:
    send(node.url, "metrics", 1)
    browser.get(f"{node.url}/ui/#token={ADMIN}")
    find(browser, 'tr[data-channel="metrics"]')

    def last_depth() -> float:
        v = browser.execute_script("var e=document.getElementById('chart-depth');return e&&e.getAttribute('data-last')")
        return float(v) if v else -1.0

    wait_for(lambda: last_depth() == 1.0, 20, 0.05)
    points_before = int(browser.find_element(By.ID, "chart-depth").get_attribute("data-points"))
    line_before = browser.find_element(By.CSS_SELECTOR, "#chart-depth polyline").get_attribute("points")
    send(node.url, "metrics", 40)
    wait_for(lambda: last_depth() == 41.0, 20, 0.05)
    assert int(browser.find_element(By.ID, "chart-depth").get_attribute("data-points")) > points_before
    assert browser.find_element(By.CSS_SELECTOR, "#chart-depth polyline").get_attribute("points") != line_before
    # the throughput chart shows the arrivals as an in-rate
    wait_for(lambda: float(browser.find_element(By.ID, "chart-rate").get_attribute("data-max")) > 0, 20, 0.05)
    shot(browser, "chart")


def test_a_dead_letter_retried_from_the_page_is_leasable_again(node: NodeProc, browser: Any) -> None:
    [dead_id] = send(node.url, "billing", 1, ttl=0.05)
    wait_for(lambda: any(d["id"] == dead_id for d in api(f"{node.url}/v1/dead")["dead"]), 20, 0.05)
    browser.get(f"{node.url}/ui/#token={ADMIN}")
    find(browser, 'tr[data-channel="billing"]')
    browser.get(f"{node.url}/ui/#/dead")
    row = find(browser, f'#dead tr[data-id="{dead_id}"]')
    reason = next(d["reason"] for d in api(f"{node.url}/v1/dead")["dead"] if d["id"] == dead_id)
    assert "billing" in row.text and reason in row.text
    row.find_element(By.CSS_SELECTOR, "input.pick").click()
    find(browser, '#dead button[data-action="retry"]').click()
    confirm = find(browser, "#confirm-yes")
    assert "Retry 1 dead letter" in text_of(browser, "#confirm-text")
    shot(browser, "dead-confirm")
    confirm.click()
    wait_for(lambda: not browser.find_elements(By.CSS_SELECTOR, f'#dead tr[data-id="{dead_id}"]'), 20, 0.05)
    assert "Retried 1" in find(browser, "#notice").text
    shot(browser, "dead-after-retry")
    assert all(d["id"] != dead_id for d in api(f"{node.url}/v1/dead")["dead"])
    leases = api(f"{node.url}/v1/channels/billing/leases", "POST", body={"max": 5})["leases"]
    assert [x["id"] for x in leases] == [dead_id]
    # cancelling the confirmation changes nothing
    [other] = send(node.url, "billing", 1, ttl=0.05)
    wait_for(lambda: any(d["id"] == other for d in api(f"{node.url}/v1/dead")["dead"]), 20, 0.05)
    browser.refresh()
    row = find(browser, f'#dead tr[data-id="{other}"]')
    row.find_element(By.CSS_SELECTOR, "input.pick").click()
    find(browser, '#dead button[data-action="purge"]').click()
    find(browser, "#confirm-no").click()
    assert [d["id"] for d in api(f"{node.url}/v1/dead")["dead"]] == [other]


def test_a_wrong_token_shows_a_clear_error(node: NodeProc, browser: Any) -> None:
    browser.get(f"{node.url}/ui/#token=not-the-right-token")
    err = find(browser, "#error")
    assert "refused this token" in err.text and "unknown token" in err.text
    assert "admin scope" in err.text
    assert find(browser, "#login-form").is_displayed()
    assert not browser.find_elements(By.CSS_SELECTOR, "main section")
    shot(browser, "wrong-token")
    # no token at all says so too
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{node.url}/ui/")
    browser.refresh()
    assert "needs a token" in find(browser, "#error").text
    # entering the right one in the form recovers
    box = find(browser, "#token")
    box.send_keys(ADMIN)
    find(browser, '#login-form button[type="submit"]').click()
    find(browser, "#chart-depth")
    assert not browser.find_elements(By.CSS_SELECTOR, "#error:not([hidden])")


def test_search_by_id_shows_the_message_or_says_the_trace_is_not_available(node: NodeProc, browser: Any) -> None:
    [dead_id] = send(node.url, "search", 1, ttl=0.05)
    wait_for(lambda: any(d["id"] == dead_id for d in api(f"{node.url}/v1/dead")["dead"]), 20, 0.05)
    browser.get(f"{node.url}/ui/#token={ADMIN}")
    find(browser, "#chart-depth")
    box = find(browser, "#search-id")
    box.send_keys(dead_id)
    find(browser, '#search button[type="submit"]').click()
    wait_for(lambda: dead_id in text_of(browser, "main section.card"), 20, 0.05)
    assert "Dead letter" in text_of(browser, "main section.card h2")
    assert "billing" not in text_of(browser, "main") and "search" in text_of(browser, "main section.card")
    # its trace on this node: created here, then dead-lettered when its ttl passed
    wait_for(lambda: "created" in text_of(browser, "#trace"), 20, 0.05)
    assert "not available" not in text_of(browser, "#trace") and "channel=search" in text_of(browser, "#trace")
    shot(browser, "search")
    # an id nowhere on this node says so, with an empty trace
    box = find(browser, "#search-id")
    box.clear()
    box.send_keys("01a23762-0000-7000-8000-000000000000")
    find(browser, '#search button[type="submit"]').click()
    wait_for(lambda: "Not in this node's" in text_of(browser, "main"), 20, 0.05)


def test_readable_on_a_phone(node: NodeProc, browser: Any) -> None:
    send(node.url, "phone-channel-with-a-long-name", 5)
    browser.set_window_size(390, 844)
    browser.get(f"{node.url}/ui/#token={ADMIN}")
    find(browser, 'tr[data-channel="phone-channel-with-a-long-name"]')
    width = browser.execute_script("return document.documentElement.scrollWidth")
    inner = browser.execute_script("return window.innerWidth")
    assert width <= inner + 1, f"the page scrolls sideways on a phone ({width} > {inner})"
    shot(browser, "phone")


def test_peers_view_shows_a_failing_peer(tmp_path: Path, browser: Any) -> None:
    from .nodes import free_port

    config = CONFIG + f'\n[peers.dc2]\nurl = "http://127.0.0.1:{free_port()}"\n'
    with NodeProc(tmp_path / "spool", config=config) as n:
        send(n.url, "orders", 3, to="dc2")
        browser.get(f"{n.url}/ui/#token={ADMIN}")
        wait_for(lambda: text_of(browser, 'tr[data-peer="dc2"]'), 20, 0.05)  # the overview's outbox table
        browser.get(f"{n.url}/ui/#/peers")

        def row() -> str:
            return text_of(browser, 'main tr[data-peer="dc2"]')

        wait_for(lambda: "unreachable" in row() or "backing_off" in row(), 30, 0.1)
        wait_for(lambda: "refused" in row().lower() or "connect" in row().lower(), 30, 0.1)
        shot(browser, "peers")
        find(browser, 'main tr[data-peer="dc2"] button').click()  # retry now (POST /v1/admin/flush)
        wait_for(lambda: "Retrying now: dc2" in text_of(browser, "#notice"), 20, 0.05)
        # the peer's outbox, browsed like a channel
        browser.get(f"{n.url}/ui/#/peer/dc2")
        wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "main tr[data-id]")) == 3, 20, 0.05)
        assert "Outbox for peer dc2" in text_of(browser, "main section.card h2")


def test_browse_open_hold_release_and_delete_from_the_page(node: NodeProc, browser: Any) -> None:
    ids = send(node.url, "shop", 3)
    api(f"{node.url}/v1/channels/shop/messages", "POST", body={"body": '{"sku": "A-1", "qty": 2}',
                                                               "headers": {"tenant": "acme"}})
    browser.get(f"{node.url}/ui/#token={ADMIN}")
    find(browser, 'tr[data-channel="shop"]')
    browser.find_element(By.CSS_SELECTOR, 'tr[data-channel="shop"] a').click()
    for i in ids:
        find(browser, f'main tr[data-id="{i}"]')
    assert "shop message 0" in text_of(browser, f'main tr[data-id="{ids[0]}"]')
    shot(browser, "browse")

    def state_of(i: str) -> str:
        return str(api(f"{node.url}/v1/admin/messages/{i}")["messages"][0]["state"])

    # hold two from the list
    for i in ids[:2]:
        browser.find_element(By.CSS_SELECTOR, f'main tr[data-id="{i}"] input.pick').click()
    browser.find_element(By.CSS_SELECTOR, 'main button[data-action="hold"]').click()
    wait_for(lambda: "hold: 2 of 2" in text_of(browser, "#notice"), 20, 0.05)
    assert [state_of(i) for i in ids] == ["held", "held", "ready"]
    wait_for(lambda: "held" in text_of(browser, f'main tr[data-id="{ids[0]}"]'), 20, 0.05)  # the list reloads
    # the overview counts them as held (still in the channel's depth)
    browser.get(f"{node.url}/ui/#/")
    wait_for(lambda: text_of(browser, 'tr[data-channel="shop"] td.held') == "2", 20, 0.05)
    assert text_of(browser, 'tr[data-channel="shop"] td.ready') == "2"
    assert text_of(browser, 'tr[data-channel="shop"] td.depth') == "4"
    # nothing held can be leased
    leased = api(f"{node.url}/v1/channels/shop/leases", "POST", body={"max": 10, "visibility": 0.5})["leases"]
    assert ids[0] not in [x["id"] for x in leased] and ids[1] not in [x["id"] for x in leased]
    # open one: headers, body, and release it from its page
    browser.get(f"{node.url}/ui/#/msg/{ids[0]}")
    wait_for(lambda: ids[0] in text_of(browser, "main section.card h2"), 20, 0.05)
    assert "held" in text_of(browser, "main section.card") and "shop message 0" in text_of(browser, "pre.body")
    assert text_of(browser, "#trace").startswith("Trace")
    shot(browser, "message")
    browser.find_element(By.CSS_SELECTOR, 'main button[data-action="release"]').click()
    wait_for(lambda: "release: 1 of 1" in text_of(browser, "#notice"), 20, 0.05)
    assert state_of(ids[0]) != "held"
    # delete asks first; cancel keeps it, yes removes it
    browser.get(f"{node.url}/ui/#/msg/{ids[1]}")
    wait_for(lambda: ids[1] in text_of(browser, "main section.card h2"), 20, 0.05)
    browser.find_element(By.CSS_SELECTOR, 'main button[data-action="delete"]').click()
    assert "cannot be undone" in find(browser, "#confirm-text").text
    find(browser, "#confirm-no").click()
    assert state_of(ids[1]) == "held"
    browser.find_element(By.CSS_SELECTOR, 'main button[data-action="delete"]').click()
    find(browser, "#confirm-yes").click()
    wait_for(lambda: "delete: 1 of 1" in text_of(browser, "#notice"), 20, 0.05)
    with pytest.raises(urllib.error.HTTPError) as e:
        api(f"{node.url}/v1/admin/messages/{ids[1]}")
    assert e.value.code == 404
    # a JSON body is shown pretty, with its headers
    msgs = api(f"{node.url}/v1/admin/messages?channel=shop&limit=100")["messages"]
    json_id = next(m["id"] for m in msgs if m["preview"].startswith("{"))
    browser.get(f"{node.url}/ui/#/msg/{json_id}")
    wait_for(lambda: '"sku": "A-1"' in text_of(browser, "pre.body"), 20, 0.05)
    assert "acme" in text_of(browser, "main section.card")
