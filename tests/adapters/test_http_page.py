"""The chat page `qwenbot serve` serves at /, in a real headless Chromium, on SmolLM2."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support.http_server import serve
from tests.support.smollm2 import smollm2_gguf

CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.mark.slow
@pytest.mark.skipif(
    not Path(CHROMEDRIVER).is_file(), reason="apt-get install chromium chromium-driver"
)
def test_the_page_streams_the_answer_with_its_speed_and_starts_over(tmp_path: Path) -> None:
    os.environ.setdefault("SE_AVOID_STATS", "true")  # Selenium Manager: no calls home
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    chromium = shutil.which("chromium")
    if chromium:
        options.binary_location = chromium
    for port, _ in serve(tmp_path, smollm2_gguf(), ENGINE__MAX_NEW_TOKENS="48"):
        driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
        try:
            driver.get(f"http://127.0.0.1:{port}/")
            driver.find_element(By.ID, "question").send_keys("What is the capital of France?")
            driver.find_element(By.ID, "send").click()
            wait = WebDriverWait(driver, 120)
            speed = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".assistant .speed"))
            answer = driver.find_element(By.CSS_SELECTOR, ".assistant .text").text
            assert "Paris" in answer
            assert "s to first token" in speed[0].text and "tok/s" in speed[0].text
            assert not driver.find_elements(By.CSS_SELECTOR, ".error")
            driver.find_element(By.ID, "new-chat").click()
            assert not driver.find_elements(By.CSS_SELECTOR, ".turn")
        finally:
            driver.quit()
