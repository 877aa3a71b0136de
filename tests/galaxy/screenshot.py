"""Screenshot of a tool form in the Galaxy web UI, with headless Chromium (Debian's chromium and
chromium-driver) driven by Selenium (from the Galaxy venv, which ships it).

    python screenshot.py URL TOOL_ID OUT.png [--width 1400] [--height 1100]

Waits until the form shows the tool's name and its first parameters, then saves the page.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait


def browser(width: int, height: int) -> webdriver.Chrome:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        raise SystemExit("screenshot: chromium and chromedriver are needed (Debian: chromium chromium-driver)")
    opts = Options()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--hide-scrollbars", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("tool_id")
    ap.add_argument("out")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=1500)
    ap.add_argument("--timeout", type=int, default=180)
    args = ap.parse_args()

    drv = browser(args.width, args.height)
    try:
        drv.get(f"{args.url.rstrip('/')}/?tool_id={args.tool_id}")
        wait = WebDriverWait(drv, args.timeout)
        # The form is there when its title and a parameter label are.
        wait.until(EC.text_to_be_present_in_element((By.TAG_NAME, "body"), "IFU extract"))
        wait.until(EC.text_to_be_present_in_element((By.TAG_NAME, "body"), "Detection threshold"))
        # Open our section of the tool panel, as a user looking for the tool would.
        for el in drv.find_elements(By.XPATH, "//*[normalize-space(text())='IFU extract']"):
            try:
                el.click()
                break
            except Exception:  # noqa: BLE001 - not clickable (hidden duplicate): try the next
                continue
        time.sleep(3)  # let fonts, icons and the tool panel settle
        drv.save_screenshot(args.out)
    except Exception as exc:  # noqa: BLE001 - say what the page showed
        drv.save_screenshot(args.out + ".failed.png")
        body = drv.find_element(By.TAG_NAME, "body").text[:500] if drv else ""
        sys.exit(f"screenshot: {type(exc).__name__}: {exc}; page text: {body!r}")
    finally:
        drv.quit()
    print(f"screenshot: {args.out}")


if __name__ == "__main__":
    main()
