"""A newcomer's journey in a real browser: headless Debian Chromium driven by Playwright.

Against the real ``./scripts/dev`` (shared session fixture): open the streaming
asset's page, click **Materialize**, wait until the run succeeded, and see the
materialization's metadata (``dagster/uri``, row count, column schema) rendered.
A screenshot is saved under ``.test-artifacts/``.
"""

from __future__ import annotations

import re
import shutil
import time
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Page, expect, sync_playwright

if TYPE_CHECKING:
    from collections.abc import Iterator

    from _e2e_helpers import DevServer

pytest_plugins = ["_e2e_helpers"]
pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ASSET = "events_stream"
EXPECTED_URI = "s3://rsd-example/dagster-example/events_stream/data.parquet"


@pytest.fixture
def page(dev_server: DevServer) -> Iterator[Page]:
    from _e2e_helpers import ARTIFACTS

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(30_000)
        try:
            yield page
        finally:
            page.screenshot(path=str(ARTIFACTS / "browser-last-page.png"), full_page=True)
            context.close()
            browser.close()


def _dismiss_welcome_dialog(page: Page) -> None:
    """A fresh Dagster home greets the first visitor with a newsletter dialog: skip it."""
    skip = page.get_by_role("dialog").get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=4_000)
    except Exception:
        return
    skip.click()
    expect(skip).to_be_hidden()


def _newest_run_id(dev_server: DevServer) -> str | None:
    data = dev_server.graphql("{ runsOrError(limit: 1) { ... on Runs { results { runId } } } }")
    results = data["runsOrError"]["results"]
    return str(results[0]["runId"]) if results else None


def test_materialize_from_the_asset_page(dev_server: DevServer, page: Page) -> None:
    from _e2e_helpers import ARTIFACTS

    run_before = _newest_run_id(dev_server)
    page.goto(f"{dev_server.url}/assets/{ASSET}", wait_until="domcontentloaded")
    _dismiss_welcome_dialog(page)
    expect(page.get_by_text("Streaming, larger-than-memory style write.")).to_be_visible()

    page.get_by_role("button", name=re.compile(r"\bMaterialize$")).click()

    # The UI launched a run: find it and wait for it like the run page does.
    deadline = time.monotonic() + 30
    run_id = _newest_run_id(dev_server)
    while run_id == run_before and time.monotonic() < deadline:
        time.sleep(0.5)
        run_id = _newest_run_id(dev_server)
    assert run_id and run_id != run_before, "clicking Materialize launched no run"
    status = dev_server.wait_run(run_id)
    assert status == "SUCCESS", dev_server.run_failure(run_id)

    # Overview shows the fresh materialization with its row count and columns ...
    page.reload(wait_until="domcontentloaded")
    _dismiss_welcome_dialog(page)
    rows = dev_server.materializations(ASSET)[0]["metadata"]["dagster/row_count"]
    expect(page.get_by_text(f"{rows:,}").first).to_be_visible(timeout=30_000)
    expect(page.get_by_role("cell", name="session").first).to_be_visible()

    # ... and the Events tab renders the materialization's metadata.
    page.get_by_role("tab", name="Events").click()
    expect(page.get_by_text(f"Materialized in run {run_id[:8]}")).to_be_visible(timeout=30_000)
    expect(page.get_by_text("dagster/uri")).to_be_visible()
    expect(page.get_by_text(EXPECTED_URI)).to_be_visible()
    expect(page.get_by_text("dagster/row_count")).to_be_visible()
    expect(page.get_by_text(str(rows), exact=True)).to_be_visible()
    expect(page.get_by_text("dagster/column_schema")).to_be_visible()
    expect(page.get_by_text("remote_store/stored_bytes")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "browser-events_stream-materialized.png"), full_page=True)

    # The column schema opens as a table.
    page.get_by_text("[Show Table Schema]").click()
    dialog = page.get_by_role("dialog")
    for column in ("event_id", "ts", "kind", "user_id", "amount", "session"):
        expect(dialog.get_by_text(column, exact=True).first).to_be_visible()
    page.wait_for_timeout(600)  # let the dialog finish fading in
    page.screenshot(path=str(ARTIFACTS / "browser-events_stream-schema.png"))


def test_preview_cleanup_sensor_tick(dev_server: DevServer, page: Page) -> None:
    """The quickstart's dry run: Automation -> remote_store_cleanup -> Preview tick result."""
    from _e2e_helpers import ARTIFACTS

    page.goto(f"{dev_server.url}/automation", wait_until="domcontentloaded")
    _dismiss_welcome_dialog(page)
    page.get_by_role("link", name="remote_store_cleanup").first.click()
    expect(page.get_by_text("[dry run]").first).to_be_visible()
    page.get_by_role("button", name="Preview tick result").click()
    page.get_by_role("dialog").get_by_role("button", name="Continue").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("Skipped", exact=True)).to_be_visible(timeout=60_000)
    expect(dialog.get_by_text(re.compile(r"Skip reason: .\[dry run\]"))).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "browser-cleanup-sensor-preview.png"))
