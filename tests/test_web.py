"""The chat app and the dashboard in a real browser: Debian's Chromium, headless, driven by Selenium.

The gateway runs in the local Functions host with simulator backends, as in
the end-to-end tests. Each test saves a screenshot under `test-artifacts/`.
Chromium and chromedriver come from the system (`make deps` installs them
where missing); Selenium is pointed at them so it never downloads a browser.
Skipped, with the reason, only when no Chromium can be started.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from shared.gateway import Gateway
from simulator import SimulatorThread
from simulator.config import Latency
from tests.fixtures.servers import GatewayServer, settings_for

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (requirements-dev.txt)")
from selenium.common.exceptions import WebDriverException  # noqa: E402 - after the skip check
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
KEY = "test-subscription-key-web-0123456789ab"
ADMIN = "test-admin-key-web"
WIDE, NARROW = (1280, 900), (390, 844)


def _find(*names: str) -> str | None:
    return next((path for name in names if (path := shutil.which(name))), None)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    chromium = _find("chromium", "chromium-browser")
    driver_path = _find("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("chromium and chromedriver are not installed (make deps installs them, as root, with apt-get)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={WIDE[0]},{WIDE[1]}")
    try:
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    except WebDriverException as exc:
        pytest.skip(f"chromium could not be started: {exc.msg}")
    ARTIFACTS.mkdir(exist_ok=True)
    yield driver
    driver.quit()


@pytest.fixture
def page(browser: WebDriver) -> Iterator[WebDriver]:
    """The shared browser, back to a wide window and with nothing stored from the test before."""
    browser.set_window_size(*WIDE)
    yield browser
    if browser.current_url.startswith("http"):
        browser.execute_script("window.localStorage.clear()")


@pytest.fixture
def start(gateway_server: Callable[..., GatewayServer]) -> Callable[..., GatewayServer]:
    def start_gateway(sims: dict[str, SimulatorThread], **env: str) -> GatewayServer:
        """A gateway over these simulators, by backend name, in priority order."""
        backends = [
            {"name": name, "endpoint": sim.url, "priority": i + 1, "deployments": ["chat", "embed"]}
            for i, (name, sim) in enumerate(sims.items())
        ]
        settings = settings_for(
            backends, GATEWAY_DEMO_KEY=KEY, GATEWAY_ADMIN_KEY=ADMIN, GATEWAY_METRICS_ENDPOINT="true", **env
        )
        return gateway_server(lambda: Gateway(settings))

    return start_gateway


def wait(driver: WebDriver, condition: Callable[[WebDriver], Any], timeout: float = 15) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def shot(driver: WebDriver, name: str, *, full_page: bool = False) -> None:
    if full_page:  # the window as tall as the page, so the picture shows all of it
        width = driver.get_window_size()["width"]
        driver.set_window_size(width, driver.execute_script("return document.documentElement.scrollHeight") + 140)
    driver.save_screenshot(str(ARTIFACTS / name))


def answers(driver: WebDriver) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, "#log .message.assistant")


def open_chat(driver: WebDriver, gw: GatewayServer, key: str = KEY) -> None:
    driver.get(f"{gw.url}/#key={key}")  # `/` redirects to /chat/, the fragment goes along
    wait(driver, lambda d: d.find_element(By.ID, "deployment").is_enabled())


def send(driver: WebDriver, text: str) -> None:
    box = driver.find_element(By.ID, "message")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)  # Enter sends, as the placeholder says


def admin_post(gw: GatewayServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{gw.url}/gateway/admin/{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"x-admin-key": ADMIN, "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


# --- chat ----------------------------------------------------------------------------------------


def test_chat_streams_the_answer_in_steps_and_shows_where_it_came_from(
    page: WebDriver, sims: Callable[..., SimulatorThread], start: Callable[..., GatewayServer]
) -> None:
    sim = sims("sim-east", latency=Latency(ttft_ms=100, tokens_per_second=12), default_max_tokens=16)
    gw = start({"sim-east": sim})
    open_chat(page, gw)
    # The key moved from the address bar into storage; the deployments came from /v1/models.
    assert "key=" not in page.current_url
    assert page.execute_script("return window.localStorage.getItem('gateway.subscriptionKey')") == KEY
    options = [o.get_attribute("value") for o in page.find_elements(By.CSS_SELECTOR, "#deployment option")]
    assert options == ["chat", "embed"]
    assert page.find_element(By.ID, "deployment").get_attribute("value") == "chat"

    send(page, "Tell me about load balancing")
    wait(page, lambda d: answers(d) and answers(d)[0].find_element(By.CLASS_NAME, "content").text)
    seen: list[str] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        answer = answers(page)[0]
        text = answer.find_element(By.CLASS_NAME, "content").text
        if text and (not seen or text != seen[-1]):
            seen.append(text)
        if answer.get_attribute("aria-busy") != "true":
            break
        if len(seen) == 3:
            shot(page, "chat-streaming.png")
        time.sleep(0.04)
    final = answers(page)[0].find_element(By.CLASS_NAME, "content").text
    assert len(seen) >= 4, f"the answer should grow in several steps, saw {seen}"
    assert all(final.startswith(step) for step in seen)  # each step is a prefix of the answer
    badges = wait(page, lambda d: answers(d)[0].find_elements(By.CSS_SELECTOR, ".badge"))
    texts = [b.text for b in badges]
    assert "backend sim-east" in texts
    assert any(t.startswith("cache ") for t in texts) is False  # no cache configured: no cache badge
    assert any(t.startswith("tokens ") for t in texts)
    # The usage panel read GET /usage after the answer.
    wait(page, lambda d: "Requests" in d.find_element(By.ID, "usage").text)
    shot(page, "chat-answer.png")
    page.set_window_size(*NARROW)
    assert page.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    shot(page, "chat-narrow.png")


def test_stop_cancels_the_stream(
    page: WebDriver, sims: Callable[..., SimulatorThread], start: Callable[..., GatewayServer]
) -> None:
    sim = sims("slow", latency=Latency(ttft_ms=50, tokens_per_second=4), default_max_tokens=40)
    gw = start({"slow": sim})
    open_chat(page, gw)
    send(page, "Write a long answer")
    wait(page, lambda d: answers(d) and answers(d)[0].find_element(By.CLASS_NAME, "content").text)
    stop = page.find_element(By.ID, "stop")
    assert stop.is_enabled()
    stop.click()
    wait(page, lambda d: answers(d)[0].get_attribute("aria-busy") is None)
    cut = answers(page)[0].find_element(By.CLASS_NAME, "content").text
    time.sleep(0.6)  # a few more tokens' time: nothing more arrives
    assert answers(page)[0].find_element(By.CLASS_NAME, "content").text == cut
    assert len(cut.split()) < 40
    assert "stopped by you" in [b.text for b in answers(page)[0].find_elements(By.CSS_SELECTOR, ".badge")]
    assert not page.find_element(By.ID, "stop").is_enabled()
    shot(page, "chat-stopped.png")


def test_throttled_request_shows_a_countdown_from_retry_after(
    page: WebDriver, sims: Callable[..., SimulatorThread], start: Callable[..., GatewayServer]
) -> None:
    gw = start({"a": sims("a")})
    tiny = admin_post(gw, "subscriptions", {"name": "tiny", "requests_per_minute": 1})
    open_chat(page, gw, key=tiny["primary_key"])
    send(page, "first")
    wait(page, lambda d: answers(d) and answers(d)[0].find_elements(By.CSS_SELECTOR, ".badge"))
    send(page, "second")
    error = page.find_element(By.ID, "error")
    wait(page, lambda d: error.is_displayed() and "Try again in" in error.text)
    first = int(error.text.split("Try again in ")[1].split(" ")[0])
    assert "Throttled" in error.text
    assert 1 <= first <= 60
    assert not page.find_element(By.ID, "send").is_enabled()
    assert page.find_element(By.ID, "message").get_attribute("value") == "second"  # kept, to send again
    assert len(answers(page)) == 1
    shot(page, "chat-throttled.png")

    def left(_: WebDriver) -> int:
        return int(error.text.split("Try again in ")[1].split(" ")[0]) if "Try again in" in error.text else 0

    wait(page, lambda d: left(d) < first, timeout=5)  # it counts down
    if first <= 5:  # the window ends soon (windows are whole minutes): Send comes back when it does
        wait(page, lambda d: "You can send again" in error.text and d.find_element(By.ID, "send").is_enabled())


def test_an_invalid_key_is_said_plainly(
    page: WebDriver, sims: Callable[..., SimulatorThread], start: Callable[..., GatewayServer]
) -> None:
    gw = start({"a": sims("a")})
    page.get(f"{gw.url}/chat/#key=not-a-valid-key")
    error = page.find_element(By.ID, "error")
    wait(page, lambda d: error.is_displayed())
    assert "subscription key was not accepted" in error.text
    shot(page, "chat-invalid-key.png")


def test_chat_is_usable_from_the_keyboard_with_labelled_controls(
    page: WebDriver, sims: Callable[..., SimulatorThread], start: Callable[..., GatewayServer]
) -> None:
    gw = start({"a": sims("a")})
    open_chat(page, gw)
    unlabelled = page.execute_script(
        "return [...document.querySelectorAll('input, select, textarea, button')]"
        ".filter(c => !(c.labels && c.labels.length) && !c.textContent.trim()).map(c => c.id)"
    )
    assert unlabelled == []
    order: list[str] = []
    for _ in range(12):  # from the top of the page, as a keyboard user arrives
        ActionChains(page).send_keys(Keys.TAB).perform()
        focused = page.switch_to.active_element
        order.append(focused.get_attribute("id") or focused.tag_name)
        if focused.get_attribute("id") == "message":
            outline = focused.value_of_css_property("outline-style")
            assert outline not in ("none", ""), "focus is visible"
    assert order[0] == "a"  # the skip link comes first
    for control in ("key", "save-key", "deployment", "message", "send"):
        assert control in order, f"{control} is not reachable with Tab: {order}"
    assert order.index("key") < order.index("deployment") < order.index("message") < order.index("send")
    page.find_element(By.ID, "message").send_keys("Hello from the keyboard", Keys.ENTER)
    wait(page, lambda d: answers(d) and answers(d)[0].find_elements(By.CSS_SELECTOR, ".badge"))
    shot(page, "chat-keyboard.png")


# --- dashboard -----------------------------------------------------------------------------------


def test_dashboard_shows_a_tripped_breaker_after_an_outage(
    page: WebDriver, sims: Callable[..., SimulatorThread], start: Callable[..., GatewayServer]
) -> None:
    primary, spare = sims("primary"), sims("spare")
    gw = start({"primary": primary, "spare": spare}, GATEWAY_BREAKER=json.dumps({"failures": 2, "trip_seconds": 300}))
    client = OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
    client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "before"}])
    page.get(f"{gw.url}/dashboard/#key={ADMIN}")
    wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, "tr[data-backend='primary'][data-breaker='closed']"))
    assert "key=" not in page.current_url
    # Refreshes by hand from here on, so each one is known to have run after the traffic before it.
    Select(page.find_element(By.ID, "interval")).select_by_value("0")

    def refresh() -> None:
        wait(page, lambda d: d.find_element(By.ID, "status").text.startswith("Updated"))
        page.execute_script("document.getElementById('status').textContent = ''")
        page.find_element(By.ID, "refresh").click()
        wait(page, lambda d: d.find_element(By.ID, "status").text.startswith("Updated"))

    primary.set_faults(error_rate=1.0, error_status=500)  # the outage: the spare answers in its place
    for i in range(3):
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": f"during {i}"}])
    refresh()
    row = page.find_elements(By.CSS_SELECTOR, "tr[data-backend='primary'][data-breaker='open']")
    assert row
    assert "open" in row[0].text
    assert page.find_element(By.ID, "tile-open").text == "1"
    assert page.find_element(By.ID, "tile-failovers").text == "2"  # the third call skipped the open breaker
    assert "primary" in page.find_element(By.ID, "failovers").text
    assert "demo" in page.find_element(By.ID, "subscriptions").text
    # One more round of traffic and a refresh: the charts draw a line through their samples.
    for i in range(2):
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": f"after {i}"}])
    refresh()
    assert " " in (page.find_element(By.CSS_SELECTOR, "#rpm-chart polyline").get_attribute("points") or "")
    assert "success" in page.find_element(By.ID, "rpm-chart").text
    assert "demo" in page.find_element(By.ID, "tpm-chart").text
    shot(page, "dashboard-breaker-open.png", full_page=True)
    page.set_window_size(*NARROW)
    assert page.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    shot(page, "dashboard-narrow.png", full_page=True)


def test_dashboard_without_the_admin_key_shows_nothing(
    page: WebDriver, sims: Callable[..., SimulatorThread], start: Callable[..., GatewayServer]
) -> None:
    gw = start({"a": sims("a")})
    page.get(f"{gw.url}/dashboard/#key=wrong-admin-key")
    error = page.find_element(By.ID, "error")
    wait(page, lambda d: error.is_displayed())
    assert "admin key was not accepted" in error.text
    assert page.find_elements(By.CSS_SELECTOR, "tr[data-backend]") == []
    shot(page, "dashboard-wrong-key.png")
