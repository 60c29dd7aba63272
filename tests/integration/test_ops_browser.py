"""The ops page in a real browser (headless Debian chromium): sign in, read the nearest-quota
panel after a scripted load, find a key, redrive a dead letter and see it delivered. A
screenshot of each panel is saved (build/screenshots, or $QP_SCREENSHOTS): docs/operations.md
shows them."""

from __future__ import annotations

import re

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.wait import WebDriverWait

from tests.integration.browser import in_browser, save_element_screenshot, save_screenshot
from tests.integration.ops_scenario import (
    EXPECTED_KEY_TRIGGERS,
    KEYS,
    ORGS,
    REFUSED,
    TOKEN,
    Refusing,
    load,
    ops_config,
)

#: Seconds the browser waits for a page to show what the load made.
SHOWS_WITHIN = 90


def panel(driver: webdriver.Chrome, panel_id: str) -> WebElement:
    return driver.find_element(By.ID, panel_id)


def reloaded_until(driver: webdriver.Chrome, shows) -> None:  # type: ignore[no-untyped-def]
    """Reload the page until ``shows(driver)``: the page is server-rendered, a reload is how
    it learns more."""

    def reloaded(driver: webdriver.Chrome) -> bool:
        if shows(driver):
            return True
        driver.refresh()
        return False

    WebDriverWait(driver, SHOWS_WITHIN, poll_frequency=1).until(reloaded)


def sign_in(driver: webdriver.Chrome, url: str) -> None:
    driver.get(url + "/ops")
    WebDriverWait(driver, 10).until(EC.presence_of_element_located((By.ID, "token")))
    assert driver.current_url.endswith("/ops/login")
    save_screenshot(driver, "ops-login")
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
    WebDriverWait(driver, 10).until(EC.presence_of_element_located((By.ID, "nearest-keys")))
    assert TOKEN not in driver.current_url


def read_overview(driver: webdriver.Chrome) -> list[tuple[str, str]]:
    """The nearest-keys panel once every key shows: (masked key, share) per row."""

    def settled(driver: webdriver.Chrome) -> bool:
        """Every key shown, both orgs, and the dead letter's outcome: the load is all in."""
        keys = panel(driver, "nearest-keys").find_elements(By.CSS_SELECTOR, "tbody tr code")
        orgs = panel(driver, "nearest-orgs").find_elements(By.CSS_SELECTOR, "tbody tr a")
        dead = driver.find_elements(By.CSS_SELECTOR, "#triggers .outcome-dead_lettered")
        return len(keys) == len(KEYS) and len(orgs) == len(ORGS) and bool(dead)

    reloaded_until(driver, settled)
    rows = panel(driver, "nearest-keys").find_elements(By.CSS_SELECTOR, "tbody tr")
    shown = []
    for row in rows:
        key = row.find_element(By.TAG_NAME, "code").text
        share = re.search(r"\d+\.\d%", row.text)
        shown.append((key, share[0] if share else ""))
    save_screenshot(driver, "ops-overview")
    for panel_id in ("nearest-keys", "nearest-orgs", "triggers", "endpoints", "flow"):
        save_element_screenshot(driver, panel(driver, panel_id), f"ops-{panel_id}")
    return shown


def find_key(driver: webdriver.Chrome, key: str) -> str:
    """Search for a key; its own view's heading."""
    driver.find_element(By.NAME, "subject").send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "form[role=search] button").click()
    WebDriverWait(driver, 10).until(EC.presence_of_element_located((By.ID, "chart")))
    save_screenshot(driver, "ops-key")
    save_element_screenshot(driver, panel(driver, "chart"), "ops-chart")
    return panel(driver, "subject").find_element(By.TAG_NAME, "h2").text


def redrive_first_letter(driver: webdriver.Chrome, url: str) -> str:
    """Tick the first dead letter, redrive the selection; its event id."""
    driver.get(url + "/ops/dlq")
    reloaded_until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "tr[data-letter]"))
    save_screenshot(driver, "ops-dlq")
    save_element_screenshot(driver, panel(driver, "dlq"), "ops-dlq-panel")
    row = driver.find_element(By.CSS_SELECTOR, "tr[data-letter]")
    event_id = row.get_attribute("data-event")
    row.find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()
    driver.find_element(By.ID, "redrive-selected").click()
    notice = WebDriverWait(driver, 10).until(EC.presence_of_element_located((By.ID, "redriven")))
    assert "Queued 1 deliveries" in notice.text
    assert event_id is not None
    return event_id


def delivered_on_overview(driver: webdriver.Chrome, url: str, event_id: str) -> str:
    """The overview's outcome for ``event_id``, once it says delivered."""
    driver.get(url + "/ops")
    selector = f'tr[data-event="{event_id}"] .outcome-delivered'
    reloaded_until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, selector))
    save_element_screenshot(driver, panel(driver, "triggers"), "ops-triggers-after-redrive")
    return driver.find_element(By.CSS_SELECTOR, selector).text


async def test_an_operator_reads_the_nearest_quotas_and_redrives_a_dead_letter(
    make_config, cli, topics_of, start_worker, receiver, browser
):
    refusing = Refusing()
    receiver.responder = refusing
    config = ops_config(make_config, receiver)
    settings = await topics_of(config)
    worker = await start_worker(config)
    await load(cli, settings, config)
    refused_triggers = sum(key == REFUSED for key, _ in EXPECTED_KEY_TRIGGERS)
    await receiver.wait_for(
        refused_triggers, timeout=SHOWS_WITHIN, where=refusing.refused.__contains__
    )

    await in_browser(sign_in, browser, worker.web_url)
    shown = await in_browser(read_overview, browser)
    assert shown == [
        ("…0001", "90.0%"),
        ("…0002", "60.0%"),
        ("…0003", "55.0%"),
        ("…0004", "10.0%"),
    ]
    assert not any(key in browser.page_source for key in KEYS)

    heading = await in_browser(find_key, browser, "ops-key-hot-0001")
    assert "ops-key-hot-0001" in heading
    assert "ops-org-a" in heading

    refusing.refusing = False
    event_id = await in_browser(redrive_first_letter, browser, worker.web_url)
    [again] = await receiver.wait_for(
        1,
        timeout=60,
        where=lambda r: r.headers.get("webhook-id") == event_id and r not in refusing.refused,
    )
    assert REFUSED.encode() in again.body
    outcome = await in_browser(delivered_on_overview, browser, worker.web_url, event_id)
    assert outcome.startswith("delivered")
