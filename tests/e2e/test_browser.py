"""The live-captions page in a real browser: Debian's headless Chromium (selenium), its fake
microphone fed from an evalset WAV, the real service behind it.  Asserts on what the page shows."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cluster.faults import kill_replica, owner_of, replica_names
from cluster.redis_server import EmbeddedRedis
from ingest.wer import wer
from tests.e2e.clips import Clip, short_clip

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip("Debian chromium + chromium-driver are needed (make setup-browser)", allow_module_level=True)

from selenium import webdriver  # noqa: E402  (after the skip: only with a browser)
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def clip(evalset: Path) -> Clip:
    return short_clip(evalset)


@pytest.fixture(scope="module")
def page_url(server_url: str) -> str:
    return server_url.replace("ws://", "http://").removesuffix("/v1/stream") + "/"


@pytest.fixture
def browser(clip: Clip) -> Iterator[WebDriver]:
    assert CHROMIUM is not None and CHROMEDRIVER is not None
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="rayscribe-chromium-")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={clip.path.resolve()}%noloop",
        "--autoplay-policy=no-user-gesture-required",
        f"--user-data-dir={profile}",
        "--window-size=1100,760",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def text(driver: WebDriver, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def number(driver: WebDriver, element_id: str) -> float:
    return float(text(driver, element_id) or 0)


def wait(driver: WebDriver, timeout_s: float, condition: Callable[[WebDriver], bool], what: str) -> None:
    WebDriverWait(driver, timeout_s, poll_frequency=0.1).until(condition, f"timed out waiting for {what}")


Fault = Callable[[WebDriver], None]


def run_page(driver: WebDriver, url: str, clip: Clip, fault: Fault | None = None) -> str:
    """Open the page, Start, let the clip play (running ``fault`` meanwhile), Stop, and return the
    transcript the page shows once the session closed."""
    driver.get(url)
    driver.find_element(By.ID, "start").click()
    wait(driver, 30, lambda d: text(d, "status") == "streaming", "the session to start")
    # partials are shown, visibly provisional, while the clip is still playing
    wait(driver, clip.duration_s + 10, lambda d: bool(text(d, "partial")), "a partial")
    assert number(driver, "captured") < clip.duration_s - 1.0, "the first partial came after the audio"
    assert "provisional" in (driver.find_element(By.ID, "partial").get_attribute("class") or "")
    if fault is not None:
        fault(driver)
    shot = os.environ.get("RAYSCRIBE_SCREENSHOT")
    if shot and fault is None:  # for the README: finals and a provisional partial on screen
        moment = lambda d: number(d, "final-count") >= 2 and bool(text(d, "partial"))  # noqa: E731
        with contextlib.suppress(TimeoutException):  # else the page as it is: not a test failure
            wait(driver, clip.duration_s, moment, "finals and a partial on screen")
        driver.save_screenshot(shot)
    played = clip.duration_s - 0.1
    wait(driver, clip.duration_s + 30, lambda d: number(d, "captured") >= played, "the whole clip")
    driver.find_element(By.ID, "stop").click()
    wait(driver, 60, lambda d: text(d, "status") == "closed", "the session to close")
    assert not text(driver, "partial")
    seqs = [e.get_attribute("data-seq") for e in driver.find_elements(By.CSS_SELECTOR, "#finals .final")]
    assert seqs == [str(i) for i in range(len(seqs))], "each final shown once, in order"
    return text(driver, "finals")


def test_page_captions_the_microphone_live(browser: WebDriver, page_url: str, clip: Clip) -> None:
    shown = run_page(browser, page_url, clip)
    assert wer([clip.text], [shown]) <= clip.bound, (shown, clip.offline_wer)
    assert text(browser, "latency").startswith("latency ") and "–" not in text(browser, "latency")
    # the downloads are built from the same finals
    srt = browser.execute_script("return Captions.srt(window.rayscribe.finals)")
    vtt = browser.execute_script("return Captions.vtt(window.rayscribe.finals)")
    assert srt.startswith("1\n00:00:") and " --> " in srt
    assert vtt.startswith("WEBVTT\n\n00:00:")


def test_page_resumes_when_the_server_drops_its_socket(
    browser: WebDriver, page_url: str, clip: Clip, redis_server: EmbeddedRedis
) -> None:
    def kill_its_ingress(driver: WebDriver) -> None:
        wait(driver, 30, lambda d: number(d, "final-count") >= 1, "a first final")
        session = str(driver.execute_script("return window.rayscribe.sessionId"))
        victim = owner_of(redis_server.url, session)
        assert victim in replica_names("Ingress")
        kill_replica(victim)  # a real fault: the replica holding the socket dies
        wait(driver, 30, lambda d: number(d, "resumes") >= 1, "the page to resume")

    shown = run_page(browser, page_url, clip, kill_its_ingress)
    # a resume re-decodes only the uncommitted tail: the failover tests' +3 points of slack
    assert wer([clip.text], [shown]) <= clip.bound + 0.03, (shown, clip.offline_wer)
