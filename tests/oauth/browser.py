"""A real headless browser for the OAuth pages: Debian's chromium through chromium-driver.

The sign-in and consent pages are forms, cookies, redirects and a CSRF token: what a browser
does with them is what users get, so the tests drive one (Selenium) instead of parsing HTML.
`Receiver` stands in for the client application: a loopback HTTP server at the registered
redirect URI that records what the browser brings it.

Waits are bounded (WAIT_SECONDS); a failing test leaves a screenshot, the page source and
the URL in its tmp_path (tests/oauth/conftest.py names them in the failure report).
"""

from __future__ import annotations

import http.server
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

# NOTE: Debian's packages (apt-get install chromium chromium-driver); .ci/run installs them.
# Given paths: left to find them, Selenium Manager would try to download a driver.
# TEST_CHROMIUM / TEST_CHROMEDRIVER point elsewhere (another distribution's packages).
CHROMIUM = Path(os.environ.get("TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
WAIT_SECONDS = 15.0
PAGE_LOAD_SECONDS = 30.0


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None when both programs are installed."""
    absent = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if absent:
        return f"{', '.join(absent)} not installed (apt-get install chromium chromium-driver)"
    return None


def chromium_options() -> webdriver.ChromeOptions:
    """Headless Chromium that runs as root in a container and keeps to the loopback."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        # NOTE: CI runs as root, where Chromium's sandbox refuses to start.
        "--no-sandbox",
        # NOTE: containers give /dev/shm 64 MB; Chromium then crashes on larger pages.
        "--disable-dev-shm-usage",
        "--no-proxy-server",
        "--window-size=1280,900",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-features=PasswordLeakDetection,Translate",
    ):
        options.add_argument(argument)
    # No "save password?" bubble: it would sit over the consent page in a headed run.
    options.add_experimental_option(
        "prefs", {"credentials_enable_service": False, "profile.password_manager_enabled": False}
    )
    return options


@dataclass
class Browser:
    """A headless Chromium session with bounded waits and failure artifacts."""

    driver: webdriver.Chrome
    artifacts: Path

    def open(self, url: str) -> None:
        """Load a page (bounded by PAGE_LOAD_SECONDS)."""
        self.driver.get(url)

    @property
    def url(self) -> str:
        """The address the browser is on now."""
        return str(self.driver.current_url)

    def wait_for(self, css: str, seconds: float = WAIT_SECONDS) -> WebElement:
        """The first element matching `css` once it is on the page; a timeout fails the test."""
        try:
            found: WebElement = WebDriverWait(self.driver, seconds).until(
                expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
            )
        except TimeoutException:
            raise AssertionError(
                f"no element {css!r} within {seconds} s on {self.url} (title {self.driver.title!r})"
            ) from None
        return found

    def find_all(self, css: str) -> list[WebElement]:
        """Every element matching `css` on the current page (none is an empty list)."""
        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def has(self, css: str) -> bool:
        """Whether an element matching `css` is on the current page."""
        return bool(self.find_all(css))

    def click_and_wait_for_next_page(self, css: str) -> None:
        """Click the element and wait until the browser has left this document.

        NOTE: a click returns before the form's navigation ends; the old <html> going stale
        is the sign the next document (the answer, or where a redirect led) has replaced it.
        """
        page = self.driver.find_element(By.TAG_NAME, "html")
        self.wait_for(css).click()

        def left(_: object) -> bool:
            try:
                page.is_enabled()
            except WebDriverException:
                # NOTE: stale, or, as Chromium sometimes says of a node of a replaced
                # document, "does not belong to the document": either way it is gone.
                return True
            return False

        try:
            WebDriverWait(self.driver, WAIT_SECONDS).until(left)
        except TimeoutException:
            raise AssertionError(f"clicking {css!r} on {self.url} loaded no new page") from None
        WebDriverWait(self.driver, WAIT_SECONDS).until(
            lambda driver: driver.execute_script("return document.readyState") == "complete"
        )

    def status(self) -> int:
        """The HTTP status of the document on screen (Navigation Timing `responseStatus`).

        NOTE: WebDriver has no status codes; Chromium reports the final response's here.
        """
        status = self.driver.execute_script(
            "const [entry] = performance.getEntriesByType('navigation');"
            "return entry ? entry.responseStatus : null;"
        )
        assert isinstance(status, int), f"no navigation status for {self.url}"
        return status

    def save_artifacts(self) -> list[Path]:
        """A screenshot, the page source and the URL, in this test's tmp_path."""
        self.artifacts.mkdir(parents=True, exist_ok=True)
        saved = []
        try:
            screenshot = self.artifacts / "screenshot.png"
            if self.driver.save_screenshot(str(screenshot)):
                saved.append(screenshot)
            source = self.artifacts / "page.html"
            source.write_text(self.driver.page_source, encoding="utf-8")
            saved.append(source)
            url = self.artifacts / "url.txt"
            url.write_text(self.url + "\n", encoding="utf-8")
            saved.append(url)
        except WebDriverException as ex:  # a crashed browser: say so, keep the test's error
            note = self.artifacts / "browser-error.txt"
            note.write_text(f"{type(ex).__name__}: {ex}\n", encoding="utf-8")
            saved.append(note)
        return saved

    def quit(self) -> None:
        """End the browser and its driver process."""
        self.driver.quit()


def start_browser(artifacts: Path) -> Browser:
    """A fresh headless Chromium (a new profile: no cookies from another test)."""
    artifacts.mkdir(parents=True, exist_ok=True)
    service = Service(
        executable_path=str(CHROMEDRIVER), log_output=str(artifacts / "chromedriver.log")
    )
    driver = webdriver.Chrome(options=chromium_options(), service=service)
    driver.set_page_load_timeout(PAGE_LOAD_SECONDS)
    driver.set_script_timeout(WAIT_SECONDS)
    return Browser(driver, artifacts)


@dataclass
class Arrival:
    """One request the browser made to the redirect URI."""

    path: str
    query: dict[str, list[str]]

    def one(self, name: str) -> str:
        """The single value of a query parameter (fails when absent or repeated)."""
        values = self.query.get(name, [])
        assert len(values) == 1, f"{name}: {values!r} in {self.query!r}"
        return values[0]


@dataclass
class Receiver:
    """The client application's redirect URI: a loopback server recording each arrival."""

    server: http.server.ThreadingHTTPServer
    path: str = "/callback"
    arrivals: list[Arrival] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def redirect_uri(self) -> str:
        """The exact URI to register for the client."""
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}{self.path}"

    def record(self, target: str) -> None:
        """Keep a request for the redirect path (the browser may also ask for a favicon)."""
        parts = urlsplit(target)
        if parts.path == self.path:
            with self._lock:
                self.arrivals.append(Arrival(parts.path, parse_qs(parts.query)))

    def clear(self) -> None:
        """Forget earlier arrivals (each test starts with none)."""
        with self._lock:
            self.arrivals.clear()

    def wait_for_arrival(self, seconds: float = WAIT_SECONDS) -> Arrival:
        """The first arrival; fails when the browser has not come within `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self._lock:
                if self.arrivals:
                    return self.arrivals[0]
            time.sleep(0.05)
        raise AssertionError(f"the browser never reached {self.redirect_uri}")


class _ReceiverHandler(http.server.BaseHTTPRequestHandler):
    server: _ReceiverServer

    def do_GET(self) -> None:
        self.server.receiver.record(self.path)
        body = b"<!doctype html><title>client</title><p id='received'>received</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest shows the test's assertions, not an access log."""


class _ReceiverServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    receiver: Receiver


def start_receiver() -> Receiver:
    """A Receiver listening on 127.0.0.1 (a free port), served from a daemon thread."""
    server = _ReceiverServer(("127.0.0.1", 0), _ReceiverHandler)
    receiver = Receiver(server)
    server.receiver = receiver
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver


def stop_receiver(receiver: Receiver) -> None:
    """Stop serving and close the socket."""
    receiver.server.shutdown()
    receiver.server.server_close()
