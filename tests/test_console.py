"""The web console in a real browser: Debian's headless Chromium driven by Playwright, against the
real server on loopback and the fake Google, found by the accessible names DESIGN.md pins.

Screenshots of every page land in test-artifacts/console/ (gitignored) to be looked at.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from nestmtx_sidecar.console import STATIC
from nestmtx_sidecar.modules.credential_consent import CALLBACK_PATH
from tests.conftest import ADMIN_PASSWORD, RunningSidecar, make_settings, serve_in_loop
from tests.fakes.google import FakeGoogle, camera, jpeg
from tests.mediamtx import MediaMTX, add_camera, busybox_path, hook_settings
from tests.nest_support import add_credential, nest_sidecar
from tests.services import ROOT, free_port, require
from tests.test_device_events import PROJECT, connect, motion, porch, sidecar
from tests.test_event_media import fakes

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Page

CHROMIUM = "/usr/bin/chromium"
# No background networking, sync or updates: the browser makes no connection off this machine.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
HAVE_CHROMIUM = Path(CHROMIUM).exists()
ARTIFACTS = ROOT / "test-artifacts" / "console"
XSS = "<img src=x onerror=window.__xss=1>"


@contextlib.asynccontextmanager
async def console_browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """Chromium with a fresh profile (user-data dir), driven by Playwright."""
    require(HAVE_CHROMIUM, "Chromium", "apt-get install chromium")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        require(False, "Playwright for Python", "pip install playwright")
        raise
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, args=CHROMIUM_ARGS,
            headless=True, viewport={"width": 1280, "height": 900})
        try:
            yield context
        finally:
            await context.close()


def expect(target: Any) -> Any:
    from playwright.async_api import expect as playwright_expect

    return playwright_expect(target)


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def open_console(browser: BrowserContext, url: str, errors: list[str] | None = None
                       ) -> Page:
    """The console's page; script errors and failed loads go to `errors` when given."""
    page = browser.pages[0] if browser.pages else await browser.new_page()
    if errors is not None:
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: errors.append(f"{message.text} {message.location}")
                if message.type == "error" else None)
    await page.goto(url + "/")
    return page


async def log_in(page: Page, username: str = "admin", password: str = ADMIN_PASSWORD) -> None:
    await page.get_by_label("Username", exact=True).fill(username)
    await page.get_by_label("Password", exact=True).fill(password)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("button", name="Log out")).to_be_visible()


async def go(page: Page, link: str) -> None:
    await page.get_by_role("navigation").get_by_role("link", name=link, exact=True).click()
    await expect(page.get_by_role("heading", level=1, name=link, exact=True)).to_be_visible()


def mediamtx(running: RunningSidecar, tmp_path: Path) -> MediaMTX:
    """MediaMTX's way of running hooks: the real hook script, BusyBox wget as its HTTP client."""
    return MediaMTX(hook_settings(), {"PATH": busybox_path(tmp_path / "bin"),
                                      "NESTMTX_URL": running.url,
                                      "NESTMTX_HOOK_SECRET": running.hook_secret})


@contextlib.asynccontextmanager
async def console_server(tmp_path: Path, **overrides: Any) -> AsyncIterator[RunningSidecar]:
    async with serve_in_loop(make_settings(tmp_path, **overrides)) as running:
        yield running


# --- served files and headers -------------------------------------------------------------

async def test_console_is_served_with_a_strict_policy(tmp_path: Path) -> None:
    preview = "https://nvr.example:8889"
    async with console_server(tmp_path, mediamtx_webrtc_url=preview + "/") as running, \
            httpx.AsyncClient(base_url=running.url) as client:
        page = await client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
        host = running.url.removeprefix("http://")
        assert directives["default-src"] == "'self'"
        assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
        assert directives["img-src"] == "'self' blob:"  # event pictures come as blob: URLs
        assert directives["connect-src"] == f"'self' ws://{host} wss://{host}"
        assert directives["frame-src"] == preview
        assert directives["frame-ancestors"] == "'none'"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"
        # No inline script or style anywhere: the policy would block it, and it is not needed.
        html = page.text
        assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
        assert "<style" not in html and " style=" not in html
        for asset in re.findall(r'(?:src|href)="(/console/[^"]+)"', html):
            reply = await client.get(asset)
            assert reply.status_code == 200, asset
            assert reply.headers["x-content-type-options"] == "nosniff"
        vendored = (await client.get("/console/socket.io.min.js")).text
        assert vendored.startswith("/*!\n * Socket.IO v4.8.1")  # the license header is kept
        assert (await client.get("/console/missing.js")).status_code == 404
        assert (await client.get("/console/../app.py")).status_code == 404
    async with console_server(tmp_path / "plain") as running, \
            httpx.AsyncClient(base_url=running.url) as client:
        policy = (await client.get("/")).headers["content-security-policy"]
        assert "frame-src 'none'" in policy


def test_vendored_socketio_client_is_the_pinned_npm_build() -> None:
    pinned = ROOT / "tests" / "js" / "node_modules" / "socket.io-client" / "dist"
    require(pinned.is_dir(), "tests/js npm packages", "npm ci --prefix tests/js")
    assert (STATIC / "socket.io.min.js").read_bytes() == \
        (pinned / "socket.io.min.js").read_bytes()


def test_a_regular_install_ships_every_console_file(tmp_path: Path) -> None:
    """`pip install .` (not editable) carries the console: the wheel holds each static file."""
    source = tmp_path / "source"  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(ROOT / "nestmtx_sidecar", source / "nestmtx_sidecar",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, capture_output=True,
                   cwd=tmp_path)
    [wheel] = (tmp_path / "dist").glob("nestmtx_sidecar-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    expected = {"nestmtx_sidecar/console/" + str(path.relative_to(STATIC.parent))
                for path in STATIC.rglob("*") if path.is_file()}
    assert expected and expected <= shipped, expected - shipped


# --- the onboarding journey -----------------------------------------------------------------

async def test_onboarding_from_log_in_to_a_live_camera(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)  # as `serve` configures it: info lines reach the log stream
    devices = {"project-1": [camera("cam-1", "Front door", room="Porch")]}
    async with FakeGoogle(devices=devices).serve() as google, \
            nest_sidecar(tmp_path, google, google_consent_url=google.consent_url) as (
                running, events, _), console_browser(tmp_path) as browser:
        google.redirect_uris.add(running.url + CALLBACK_PATH)
        errors: list[str] = []
        page = await open_console(browser, running.url, errors)
        await expect(page.get_by_role("link", name="Cameras")).to_be_hidden()
        await screenshot(page, "login")
        await log_in(page)

        await go(page, "Credentials")
        await expect(page.get_by_text(running.url + CALLBACK_PATH)).to_be_visible()
        await page.get_by_role("button", name="Add credential").click()
        await page.get_by_label("Description").fill("Home")
        await page.get_by_label("OAuth client ID").fill(google.client_id)
        await page.get_by_label("OAuth client secret").fill(google.client_secret)
        await page.get_by_label("Device Access project ID").fill("project-1")
        await page.get_by_role("button", name="Save").click()
        row = page.get_by_role("row").filter(has_text="Home")
        await expect(row).to_contain_text("Not authorized yet")
        await screenshot(page, "credentials-added")

        # Google's consent page redirects to the callback, which returns to the console.
        await row.get_by_role("button", name="Authorize with Google").click()
        await page.wait_for_url(running.url + CALLBACK_PATH + "?*")
        await expect(page.get_by_role("heading", name="Authorized")).to_be_visible()
        await page.wait_for_url(running.url + "/#credentials")
        await expect(page.get_by_role("row").filter(has_text="Home")).to_contain_text(
            "Authenticated with Google")
        await screenshot(page, "credentials")
        assert [c.endpoint for c in google.calls][:2] == ["consent", "token"]

        await go(page, "Cameras")
        row = page.get_by_role("row").filter(has_text="Front door")
        await expect(row).to_contain_text("Porch")
        await expect(row).to_contain_text("RTSP")
        await expect(row).to_contain_text("640\N{MULTIPLICATION SIGN}480")
        await row.get_by_label("Path", exact=True).fill("front-door")
        await row.get_by_label("Enabled", exact=True).check()
        await row.get_by_role("button", name="Save").click()
        await expect(row.get_by_text("Saved.")).to_be_visible()
        await expect(row).to_contain_text("rtsp://127.0.0.1:8554/front-door")
        saved = await running.sidecar.cameras.by_path("front-door")
        assert saved is not None and saved.enabled

        hooks = mediamtx(running, tmp_path)
        result = await hooks.run("ready", "front-door", MTX_SOURCE_TYPE="rtspSource",
                                 MTX_SOURCE_ID="src-1")
        assert result.returncode == 0, result.stderr
        await expect(row).to_contain_text(re.compile(r"Ready\s*yes"))
        await screenshot(page, "cameras")
        await go(page, "Events")
        item = page.get_by_role("listitem").filter(has_text="camera:ready")
        await expect(item).to_contain_text("front-door", timeout=1000)
        result = await hooks.run("read", "front-door", MTX_READER_TYPE="webRTCSession",
                                 MTX_READER_ID="reader-1")
        assert result.returncode == 0, result.stderr
        read = page.get_by_role("listitem").filter(has=page.get_by_text("camera:read", exact=True))
        await expect(read).to_contain_text("front-door", timeout=1000)
        await screenshot(page, "events")

        await go(page, "Logs")
        await expect(page.get_by_role("listitem").filter(
            has_text='"POST /hooks/ready HTTP/1.1" 202')).to_be_visible()  # the hook's line
        await expect(page.get_by_role("listitem").filter(
            has_text="device sync for credential")).to_contain_text("1 devices")
        await expect(page.get_by_role("listitem").filter(
            has_text="authenticated; access token valid until")).to_contain_text("info")
        await screenshot(page, "logs")

        token = await page.evaluate("JSON.parse(sessionStorage.getItem('nestmtx.session')).bearer")
        await page.get_by_role("button", name="Log out").click()
        await expect(page.get_by_role("button", name="Log in")).to_be_visible()
        await expect(page.get_by_role("link", name="Cameras")).to_be_hidden()
        assert await page.get_by_text("Front door").count() == 0
        assert await page.evaluate("sessionStorage.length") == 0
        async with httpx.AsyncClient(base_url=running.url) as client:  # the token is revoked
            reply = await client.get("/api/cameras", headers={"Authorization": f"Bearer {token}"})
            assert reply.status_code == 401
        await page.goto(running.url + "/#cameras")
        await expect(page.get_by_role("button", name="Log in")).to_be_visible()
        assert await page.get_by_text("Front door").count() == 0
        assert errors == []
        assert events.named("credentials", "authenticated")


async def test_cancelled_authorization_says_why_and_leads_back(tmp_path: Path) -> None:
    async with FakeGoogle(deny_consent=True).serve() as google, \
            nest_sidecar(tmp_path, google, google_consent_url=google.consent_url) as (
                running, _, client), console_browser(tmp_path) as browser:
        google.redirect_uris.add(running.url + CALLBACK_PATH)
        await add_credential(client, google)
        page = await open_console(browser, running.url)
        await log_in(page)
        await go(page, "Credentials")
        await browser.grant_permissions(["clipboard-read", "clipboard-write"])
        await page.get_by_role("button", name="Copy redirect URI").click()
        await expect(page.get_by_text("Copied", exact=True)).to_be_visible()
        assert await page.evaluate("navigator.clipboard.readText()") == \
            running.url + CALLBACK_PATH
        row = page.get_by_role("row").filter(has_text="Home")
        await row.get_by_role("button", name="Authorize with Google").click()
        await expect(page.get_by_role("heading", name="Authorization cancelled")).to_be_visible()
        await expect(page.get_by_text("cancelled at Google")).to_be_visible()
        await screenshot(page, "authorization-cancelled")
        await page.get_by_role("link", name="Back to Credentials in the console").click()
        await expect(page.get_by_role("row").filter(has_text="Home")).to_contain_text(
            "Not authorized yet")


async def test_refused_refresh_token_explains_the_testing_trap(tmp_path: Path) -> None:
    async with FakeGoogle().serve() as google, \
            nest_sidecar(tmp_path, google) as (running, events, client), \
            console_browser(tmp_path) as browser:
        page = await open_console(browser, running.url)
        await log_in(page)
        await go(page, "Credentials")
        # Added while the page is open: the live `credentials:unauthenticated` event tells it.
        await add_credential(client, google, refresh_token="1//revoked-refresh-token-123456")
        await events.wait("credentials", "unauthenticated")
        row = page.get_by_role("row").filter(has_text="Home")
        await expect(row).to_contain_text("7 days")
        await expect(row).to_contain_text("Publish app")
        await expect(row.get_by_role("button", name="Authorize with Google")).to_be_enabled()
        await page.reload()  # and from the stored state after a reload
        await expect(page.get_by_role("row").filter(has_text="Home")).to_contain_text("7 days")
        await screenshot(page, "credentials-invalid-grant")
        page.once("dialog", lambda dialog: dialog.accept())
        await page.get_by_role("button", name="Delete Home").click()
        await expect(page.get_by_text("No credentials yet.")).to_be_visible()
        assert (await client.get("/api/credentials")).json()["total"] == 0


# --- safety ---------------------------------------------------------------------------------

async def test_api_values_are_rendered_as_text_never_as_html(tmp_path: Path) -> None:
    async with console_server(tmp_path) as running, console_browser(tmp_path) as browser:
        await add_camera(running.sidecar.store, "porch", name=XSS)
        page = await open_console(browser, running.url)
        await log_in(page)
        row = page.get_by_role("row").filter(has_text=XSS)
        await expect(row).to_be_visible()
        await go(page, "Events")
        async with httpx.AsyncClient(base_url=running.url) as client:
            reply = await client.post("/hooks/ready", json={"MTX_PATH": XSS}, headers={
                "Authorization": f"Bearer {running.hook_secret}"})
            assert reply.status_code == 202, reply.text
        await expect(page.get_by_role("listitem").filter(has_text="camera:ready")
                     ).to_contain_text(XSS)
        await screenshot(page, "xss-as-text")
        assert await page.locator("main img").count() == 0
        assert await page.evaluate("window.__xss") is None


async def test_keyboard_alone_logs_in_and_moves_between_pages(tmp_path: Path) -> None:
    async with console_server(tmp_path) as running, console_browser(tmp_path) as browser:
        page = await open_console(browser, running.url)
        await expect(page.get_by_label("Username", exact=True)).to_be_focused()
        await page.keyboard.type("admin")
        await page.keyboard.press("Tab")
        await expect(page.get_by_label("Password", exact=True)).to_be_focused()
        await page.keyboard.type(ADMIN_PASSWORD)
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("button", name="Log out")).to_be_visible()
        link = page.get_by_role("navigation").get_by_role("link", name="Credentials", exact=True)
        for _ in range(10):  # skip link, then the navigation in order
            await page.keyboard.press("Tab")
            if await link.evaluate("node => node === document.activeElement"):
                break
        await expect(link).to_be_focused()
        outline = await link.evaluate("node => getComputedStyle(node).outlineStyle")
        assert outline not in ("", "none")  # focus is visible
        await screenshot(page, "keyboard-focus")
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("heading", level=1, name="Credentials")).to_be_focused()
        await page.keyboard.press("Tab")
        await page.keyboard.press("Tab")  # the redirect URI's copy button, then Add credential
        await expect(page.get_by_role("button", name="Add credential")).to_be_focused()
        await page.keyboard.press("Enter")
        await expect(page.get_by_label("Description")).to_be_focused()


async def test_usable_at_390_px(tmp_path: Path) -> None:
    preview = f"http://127.0.0.1:{free_port()}"
    async with console_server(tmp_path, public_rtsp_url="rtsp://nvr.example:8554/",
                              mediamtx_webrtc_url=preview) as running, \
            console_browser(tmp_path) as browser:
        await add_camera(running.sidecar.store, "garden/back-yard", name="Back yard")
        page = await open_console(browser, running.url)
        await page.set_viewport_size({"width": 390, "height": 844})
        await log_in(page)
        row = page.get_by_role("row").filter(has_text="Back yard")
        await expect(row.get_by_label("Path", exact=True)).to_have_value("garden/back-yard")
        await expect(row).to_contain_text("rtsp://nvr.example:8554/garden/back-yard")
        await expect(row).to_contain_text(  # bases left empty: this host, MediaMTX's ports
            "http://127.0.0.1:8888/garden/back-yard/index.m3u8")
        await row.get_by_role("button", name="Preview").click()
        frame = row.locator("iframe")
        await expect(frame).to_have_attribute("title", "Live preview of Back yard")
        await expect(frame).to_have_attribute("src", preview + "/garden/back-yard")
        await row.get_by_role("button", name="Preview").click()
        await expect(frame).to_have_count(0)
        for name in ("cameras-390", "credentials-390"):
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"{name}: the page scrolls sideways ({width} px)"
            await screenshot(page, name)
            await go(page, "Credentials")


async def test_events_and_logs_filter_and_pause(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with console_server(tmp_path) as running, console_browser(tmp_path) as browser:
        await add_camera(running.sidecar.store, "porch", name="Porch")
        await add_camera(running.sidecar.store, "garage", name="Garage")
        hooks = mediamtx(running, tmp_path)
        page = await open_console(browser, running.url)
        await log_in(page)
        await go(page, "Events")
        for path in ("porch", "garage"):
            assert (await hooks.run("ready", path)).returncode == 0
        items = page.locator("#events-list li")
        await expect(items).to_have_count(2)
        await page.get_by_label("Camera", exact=True).fill("garage")
        await expect(items).to_have_count(1)
        await expect(items).to_contain_text("Garage")
        await page.get_by_label("Event", exact=True).fill("notReady")
        await expect(items).to_have_count(0)
        await page.get_by_label("Event", exact=True).fill("")
        await page.get_by_label("Domain", exact=True).select_option("credentials")
        await expect(items).to_have_count(0)
        await page.get_by_label("Domain", exact=True).select_option("")
        await page.get_by_label("Camera", exact=True).fill("")
        await expect(items).to_have_count(2)

        await page.get_by_role("button", name="Pause").click()
        assert (await hooks.run("unread", "porch")).returncode == 0
        await expect(page.get_by_text("Paused: 1 new event(s) held back.")).to_be_visible()
        await expect(items).to_have_count(2)
        await page.get_by_role("button", name="Resume").click()
        await expect(items).to_have_count(3)
        await expect(items.first).to_contain_text("camera:unread")

        await go(page, "Logs")
        logging.getLogger("nestmtx_sidecar.test").warning("a warning for the console")
        logging.getLogger("nestmtx_sidecar.test").info("an info line for the console")
        lines = page.locator("#logs-list li")
        await expect(lines.filter(has_text="an info line for the console")).to_contain_text(
            "info")
        await page.get_by_label("Level", exact=True).select_option("warn")
        await expect(lines.filter(has_text="for the console")).to_have_count(1)
        await expect(lines.filter(has_text="for the console")).to_contain_text("warn")
        await page.get_by_label("Level", exact=True).select_option("trace")
        await page.get_by_label("Search", exact=True).fill("info line for")
        await expect(lines).to_have_count(1)
        await page.get_by_role("button", name="Pause").click()
        logging.getLogger("nestmtx_sidecar.test").info("another info line for the console")
        await expect(page.get_by_text("Paused: 1 new line(s) held back.")).to_be_visible()
        await expect(lines).to_have_count(1)
        await page.get_by_role("button", name="Resume").click()
        await expect(lines).to_have_count(2)


async def test_a_device_event_shows_its_picture(tmp_path: Path) -> None:
    picture = jpeg(96, 64, shade=200)
    async with fakes("CameraEventImage") as (google, pubsub), \
            sidecar(tmp_path, google, pubsub) as e, console_browser(tmp_path) as browser:
        await connect(e)
        await porch(e)
        errors: list[str] = []
        page = await open_console(browser, e.running.url, errors)
        await log_in(page)
        await go(page, "Events")
        google.camera_event("cam-1", "ev-console", picture)
        e.pubsub.publish(motion("ev-console"))
        item = page.locator("#events-list li").filter(has_text="camera:motion")
        image = item.get_by_role("img", name="Porch: motion")
        await expect(image).to_be_visible()
        await expect(image).to_have_attribute("src", re.compile("^blob:"))
        # Decoded by the browser: the JPEG Google made, at its own size.
        await page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                                     arg=await image.element_handle())
        assert await image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [96, 64]
        await screenshot(page, "events-picture")
        # The camera's row shows its last event, with the same picture.
        await go(page, "Cameras")
        await expect(page.get_by_text(re.compile(r"^Last event: motion \("))).to_be_visible()
        last = page.get_by_role("img", name="Porch: last event, motion")
        await expect(last).to_have_attribute("src", re.compile("^blob:"))
        await page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                                     arg=await last.element_handle())
        assert google.count("image", 200) == 1  # the browser fetched it from the sidecar
        assert errors == []


async def test_a_credential_with_device_events_shows_the_one_manual_step(tmp_path: Path
                                                                         ) -> None:
    async with fakes() as (google, pubsub), sidecar(tmp_path, google, pubsub) as e, \
            console_browser(tmp_path) as browser:
        await connect(e)  # with a Google Cloud project: the sidecar set Pub/Sub up
        await porch(e)
        errors: list[str] = []
        page = await open_console(browser, e.running.url, errors)
        await log_in(page)
        await go(page, "Credentials")
        row = page.get_by_role("row").filter(has_text="Device events")
        topic = f"projects/{PROJECT}/topics/nestmtx-project-1"
        await expect(row).to_contain_text(f"under Pub/Sub topic enter {topic} and enable events")
        await expect(row).to_contain_text("waiting for the first event")
        await expect(row).to_contain_text("No event has arrived yet.")
        await expect(row.get_by_role("button", name="Copy topic")).to_be_visible()
        e.pubsub.publish(motion("ev-console"))
        await expect(row).to_contain_text("Receiving events.")
        await expect(row).to_contain_text("Last event at ")
        await screenshot(page, "credentials-device-events")
        assert errors == []


async def test_a_revoked_session_returns_to_log_in(tmp_path: Path) -> None:
    async with console_server(tmp_path) as running, console_browser(tmp_path) as browser:
        page = await open_console(browser, running.url)
        await log_in(page)
        token = await page.evaluate("JSON.parse(sessionStorage.getItem('nestmtx.session')).bearer")
        async with httpx.AsyncClient(base_url=running.url) as client:  # e.g. from another tab
            reply = await client.delete("/api/auth", headers={"Authorization": f"Bearer {token}"})
            assert reply.status_code in (200, 204), reply.text
        await expect(page.get_by_role("button", name="Log in")).to_be_visible()
        await expect(page.get_by_role("alert")).to_contain_text("Log in again")
        await expect(page.get_by_role("button", name="Log out")).to_be_hidden()


async def test_console_module_hands_out_the_stream_url_bases_to_logged_in_users(
        tmp_path: Path) -> None:
    async with console_server(tmp_path, public_hls_url="https://nvr.example:8888/",
                              mediamtx_webrtc_url="https://nvr.example:8889") as running, \
            httpx.AsyncClient(base_url=running.url) as client:
        assert (await client.get("/api/console")).status_code == 401
        reply = await client.get("/api/console", headers={
            "Authorization": f"Bearer {await running.login()}"})
        assert reply.json() == {"rtsp_url": "", "webrtc_url": "",
                                "hls_url": "https://nvr.example:8888",
                                "preview_url": "https://nvr.example:8889"}


# --- users and status -----------------------------------------------------------------------

async def test_users_page_adds_changes_disables_and_deletes(tmp_path: Path) -> None:
    async with console_server(tmp_path) as running, console_browser(tmp_path) as browser:
        page = await open_console(browser, running.url)
        await log_in(page)
        await go(page, "Users")
        me = page.get_by_role("row").filter(has_text="admin")
        await expect(me).to_contain_text("(you)")
        await expect(me.get_by_role("button", name=re.compile("^Delete"))).to_have_count(0)
        await page.get_by_label("New username").fill("viewer")
        await page.get_by_label("New user's password").fill("first password")
        await page.get_by_role("button", name="Add user").click()
        viewer = page.get_by_role("row").filter(has_text="viewer")
        await expect(viewer).to_contain_text("may log in")
        await running.login("viewer", "first password")

        await viewer.get_by_role("button", name="Change password of viewer").click()
        await viewer.get_by_label("New password for viewer").fill("second password")
        await viewer.get_by_role("button", name="Set password").click()
        await expect(viewer.get_by_role("status")).to_have_text("Password changed.")
        await running.login("viewer", "second password")

        await viewer.get_by_role("button", name="Disable viewer").click()
        await expect(viewer).to_contain_text("disabled")
        async with httpx.AsyncClient(base_url=running.url) as client:
            refused = await client.post("/api/auth", json={"username": "viewer",
                                                           "password": "second password"})
            assert refused.status_code == 401
        await screenshot(page, "users")
        page.once("dialog", lambda dialog: dialog.accept())
        await viewer.get_by_role("button", name="Delete viewer").click()
        await expect(page.get_by_role("row").filter(has_text="viewer")).to_have_count(0)

        await page.get_by_label("New username").fill("short")
        await page.get_by_label("New user's password").fill("2short")
        await page.evaluate("document.getElementById('user-password').removeAttribute('minlength')")
        await page.get_by_role("button", name="Add user").click()
        await expect(page.get_by_role("alert").filter(has_text="password")).to_contain_text(
            "8 to 1024")  # the module's refusal, in words


async def test_status_page_shows_this_replica(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: MediaMTX is down
    async with console_server(tmp_path, mediamtx_api_url=closed) as running, \
            console_browser(tmp_path) as browser:
        page = await open_console(browser, running.url)
        await log_in(page)
        await go(page, "Status")
        facts = page.locator("#status-list")
        await expect(facts).to_contain_text("Check: database")
        await expect(facts).to_contain_text("nestmtx-sidecar 0.1.0")
        await expect(facts).to_contain_text("Connected sockets1")
        await expect(facts).to_contain_text("nest: held by this replica")
        await expect(facts).to_contain_text("unreachable (ConnectError)")
        await screenshot(page, "status")
        async with httpx.AsyncClient(base_url=running.url) as client:
            public = (await client.get("/api/health")).json()
        assert set(public) == {"status", "checks", "uptime"}  # logged-out callers get no more


async def test_api_page_renders_the_openapi_description(tmp_path: Path) -> None:
    async with console_server(tmp_path) as running, console_browser(tmp_path) as browser:
        async with httpx.AsyncClient(base_url=running.url) as client:
            described = await client.get("/api/openapi.json")
        require(described.status_code == 200, "GET /api/openapi.json",
                "merge the branch that generates the OpenAPI description")
        page = await open_console(browser, running.url)
        await log_in(page)
        await go(page, "API")
        doc = page.locator("#api-doc")
        for path in described.json()["paths"]:
            await expect(doc).to_contain_text(path)
        operation = doc.locator("details").filter(has_text="/api/auth").first
        await operation.locator("summary").click()
        await expect(operation).to_contain_text("Responses")
        # The request body's fields, readable: name, type, limits, required.
        await expect(operation.locator("li").filter(has_text="password").first).to_contain_text(
            "string [1\N{EN DASH}1024 chars] required")
        await screenshot(page, "api")
