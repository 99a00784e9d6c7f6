"""``grmp-edge run --serve`` watched in a real browser: headless Chromium driven by Selenium.

Needs Debian's ``chromium`` and ``chromium-driver`` (apt) and Selenium (the ``dev`` extra).
"""
from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time

import cv2
import numpy as np
import pytest

from grmp_edge.data.pristine import sample_video

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1000,1100")
FPS = 25.0


def degrading_video(path, bright: int = 60, dark: int = 60):
    """The sample video at 640x360: ``bright`` frames as they are, then ``dark`` frames fading to 20%
    brightness and blurred (an iris closing on a camera that loses focus). The test bundle's score
    rises with brightness, so the second half raises a ``degraded`` event and a replay ``recovered``."""
    cap = cv2.VideoCapture(str(sample_video()))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (640, 360))
    for i in range(bright + dark):
        ok, frame = cap.read()
        assert ok, "the sample video is shorter than expected"
        frame = cv2.resize(frame, (640, 360), interpolation=cv2.INTER_AREA)
        if i >= bright:
            level = max(0.2, 1.0 - 0.8 * (i - bright) / 15)
            frame = cv2.GaussianBlur((frame * level).astype(np.uint8), (0, 0), 3)
        writer.write(frame)
    writer.release()
    cap.release()
    return path


def _chromium(profile):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: pip install 'grmp-edge[dev]'")
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.fail("headless Chromium is needed: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    # An explicit driver: Selenium must not go looking for one on the network.
    return webdriver.Chrome(options=options, service=Service(driver))


def _wait_for_url(log, proc, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"live page at (http://\S+)", log.read_text())
        if found:
            return found.group(1)
        assert proc.poll() is None, f"the run ended early:\n{log.read_text()}"
        time.sleep(0.1)
    raise AssertionError(f"no live page URL in the run's log:\n{log.read_text()}")


@pytest.mark.slow
def test_live_page_in_headless_chromium(bundle, tmp_path, cli):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    video = degrading_video(tmp_path / "degrading.avi")
    log = tmp_path / "run.log"
    with open(log, "w") as err:
        # No --realtime: with --serve a video plays at its own 25 fps by default.
        proc = cli.popen(["run", "--bundle", str(bundle), "--source", str(video), "--serve", "0", "--loop",
                          "--alpha", "0.5", "--low", "0.56", "--high", "0.59", "--quiet", "--no-save"],
                         stdout=subprocess.DEVNULL, stderr=err)
    browser = None
    try:
        url = _wait_for_url(log, proc)
        browser = _chromium(tmp_path / "chromium-profile")
        browser.get(url)
        wait = WebDriverWait(browser, 60)
        tile = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, ".tile"))
        assert tile.find_element(By.CSS_SELECTOR, ".name").text == f"video {video}"

        seen: list[str] = []

        def score_changed_twice(_):
            text = tile.find_element(By.CSS_SELECTOR, ".score").text
            if re.fullmatch(r"0\.\d{3}", text) and (not seen or seen[-1] != text):
                seen.append(text)
            return len(seen) >= 3

        wait.until(score_changed_twice)
        assert browser.find_element(By.ID, "status").text == "live"

        picture = tile.find_element(By.CSS_SELECTOR, ".picture")
        wait.until(lambda _: browser.execute_script("return arguments[0].naturalWidth", picture) == 640)
        shot = cv2.imdecode(np.frombuffer(picture.screenshot_as_png, np.uint8), cv2.IMREAD_COLOR)
        # Inside the rounded corners; a blank tile is flat (its #111 background), even a dark frame is not.
        assert shot is not None and shot[8:-8, 8:-8].std() > 5, "the tile's picture is blank"

        def events(_) -> list[list[str]]:  # read in one go: the page replaces the list when an event comes
            return browser.execute_script("return Array.from(arguments[0].querySelectorAll('.events li'),"
                                          " (li) => [li.className, li.textContent])", tile)

        wait.until(lambda b: any(kind == "degraded" for kind, _ in events(b)))
        assert all(re.search(rf"{kind} \(frame \d+, smoothed 0\.\d{{3}}\)", text) for kind, text in events(None))
        # The replay brightens the picture again; then the second dip turns the badge red once more.
        wait.until(lambda b: any(kind == "recovered" for kind, _ in events(b)))
        wait.until(lambda _: tile.find_element(By.CSS_SELECTOR, ".badge").text == "degraded")
        drawn = browser.execute_script(
            "const c = arguments[0]; const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i + 2] > 200 && d[i] < 100) n++; return n;",
            tile.find_element(By.CSS_SELECTOR, ".chart"))
        assert drawn > 50, "the chart has no smoothed-score line"
        screenshot = tmp_path / "serve.png"
        assert browser.save_screenshot(str(screenshot))
        print(f"screenshot: {screenshot}")
    finally:
        if browser is not None:
            browser.quit()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert "stopped by SIGINT" in log.read_text(), log.read_text()
