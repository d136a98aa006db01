#!/usr/bin/python3
"""The web page of `cspn serve` in headless Chromium: load /, upload a photo, and check that the
garments' landmarks are drawn on the canvas and named in the table. Keeps a screenshot.

Exit status 77 (ctest: skipped) when Chromium, chromedriver or Selenium is missing.
Usage: test_web_page.py --cspn BIN --model MODEL --photo JPG --screenshot PNG
"""
import argparse
import json
import os
import sys

from harness import chrome, fail, start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cspn", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--photo", required=True)
    parser.add_argument("--screenshot", required=True)
    args = parser.parse_args()

    driver = chrome(1400, 1000)  # first: it exits 77 where Selenium is missing
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server, url = start(args.cspn, ["serve", "--model", args.model])
    try:
        driver.get(url)
        WebDriverWait(driver, 30).until(lambda d: "landmarks" in d.find_element(By.ID, "model").text)
        # min score 0: the test model is barely trained; its 4 best boxes are the garments to draw.
        score = driver.find_element(By.ID, "min_score")
        score.clear()
        score.send_keys("0")
        upload = driver.find_element(By.ID, "file")
        driver.execute_script("arguments[0].hidden = false", upload)
        upload.send_keys(os.path.realpath(args.photo))
        WebDriverWait(driver, 120).until(
            lambda d: "garment(s)" in d.find_element(By.ID, "status").text or "error" in d.find_element(By.ID, "status").get_attribute("class"))
        status = driver.find_element(By.ID, "status").text
        if "garment(s)" not in status:
            fail("the page reports: " + status)
        answer = json.loads(driver.find_element(By.ID, "json").text)
        if not answer["garments"]:
            fail("no garments in the answer: " + status)

        rows = driver.find_elements(By.CSS_SELECTOR, "#garments tbody tr")
        if len(rows) != len(answer["garments"]):
            fail(f"{len(rows)} table rows for {len(answer['garments'])} garments")
        table = driver.find_element(By.ID, "garments").text
        for garment in answer["garments"]:
            for name in garment["landmarks"]:
                if name not in table:
                    fail(f"landmark name {name} missing from the table")

        # Each landmark is drawn in its category's colour: a filled dot when visible, a ring when not.
        palette = [(0xE6, 0x28, 0x28), (0x1E, 0x78, 0xE6), (0x28, 0xB4, 0x28), (0xC8, 0x28, 0xC8), (0xDC, 0xC8, 0x1E)]
        width, height = answer["width"], answer["height"]
        unit = max(1.0, min(width, height) / 400)
        drawn = checked = 0
        for garment in answer["garments"]:
            colour = palette[(garment["category_id"] - 1) % len(palette)]
            for p in garment["landmarks"].values():
                x = p["x"] if p["visible"] else p["x"] + 4 * unit
                if not (0 <= x < width and 0 <= p["y"] < height):
                    continue
                pixel = driver.execute_script(
                    "const c = document.getElementById('canvas');"
                    "return Array.from(c.getContext('2d').getImageData(arguments[0], arguments[1], 1, 1).data);",
                    int(x), int(p["y"]))
                checked += 1
                drawn += all(abs(pixel[i] - colour[i]) <= 40 for i in range(3))
        canvas = driver.execute_script("const c = document.getElementById('canvas'); return [c.width, c.height];")
        if canvas != [width, height]:
            fail(f"canvas {canvas} for a {width}x{height} photo")
        # Later garments may paint over earlier ones: most points, not all, keep their own colour.
        if checked == 0 or drawn < 0.6 * checked:
            fail(f"only {drawn} of {checked} landmarks found drawn in their colour")
        driver.save_screenshot(args.screenshot)
        print(f"ok: {len(answer['garments'])} garments, {drawn}/{checked} landmarks drawn, screenshot {args.screenshot}")
    finally:
        server.terminate()
        server.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
