"""What the browser tests share: failing with a message, starting a `cspn` server on a free port,
and headless Chromium (exit status 77, ctest's skipped, where Chromium, its driver or Selenium is
missing)."""
import atexit
import re
import shutil
import subprocess
import sys
import time

SKIP = 77


def fail(message):
    print("FAIL:", message)
    sys.exit(1)


def start(cspn, command, timeout=300):
    """Runs `cspn COMMAND... --port 0` and returns (process, its http://host:port/ URL)."""
    server = subprocess.Popen([cspn, *command, "--port", "0"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = server.stderr.readline()
        if not line:
            break
        match = re.search(r"on (http://[\d.]+:\d+/)", line)
        if match:
            return server, match.group(1)
    server.kill()
    fail(f"cspn {command[0]} did not say where it listens")


def chrome(width, height):
    """Headless Chromium through Selenium, quit at exit; exits 77 where either is missing."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        print("skipped: python3-selenium is not installed (scripts/bootstrap.sh installs it)")
        sys.exit(SKIP)
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        print("skipped: chromium or chromedriver is not installed (scripts/bootstrap.sh installs them)")
        sys.exit(SKIP)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    atexit.register(driver.quit)  # however the test ends
    return driver
