#!/usr/bin/python3
"""The labelling page of `cspn label` in headless Chromium, on 3 photos with a tiny model: drag a
landmark at the fitted zoom and another zoomed in, mark a third occluded, add a garment, delete
another, reload. Then the saved file must hold exactly those edits (positions within 1 image
pixel, the occluded landmark with COCO v=1), and `cspn train` must train on it. Keeps screenshots.

Exit status 77 (ctest: skipped) when Chromium, chromedriver or Selenium is missing.
Usage: test_label_page.py --cspn BIN --model MODEL --photos DIR --train-config YAML --work DIR --screenshots DIR
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

from harness import chrome, fail, start


def main():
    parser = argparse.ArgumentParser()
    for flag in ("--cspn", "--model", "--photos", "--train-config", "--work", "--screenshots"):
        parser.add_argument(flag, required=True)
    args = parser.parse_args()

    driver = chrome(1700, 1100)  # first: it exits 77 where Selenium is missing
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    shutil.rmtree(args.work, ignore_errors=True)
    photos = os.path.join(args.work, "photos")
    os.makedirs(photos)
    for name in sorted(f for f in os.listdir(args.photos) if f.lower().endswith(".jpg"))[:3]:
        shutil.copy(os.path.join(args.photos, name), photos)
    labels = os.path.join(args.work, "labels.json")
    os.makedirs(args.screenshots, exist_ok=True)
    # min_score 0: the tiny model is barely trained; its 4 best boxes are the suggestions.
    server, url = start(args.cspn, ["label", "--images", photos, "--out", labels, "--model", args.model,
                                    "--set", "test.min_score=0"])
    js = driver.execute_script

    def loaded():
        WebDriverWait(driver, 60).until(lambda d: js("return window.cspnLabel && window.cspnLabel.current() !== null"))

    def saved():
        WebDriverWait(driver, 60).until(lambda d: js("return window.cspnLabel.pending()") == 0)

    canvas = None

    def drag_landmark(garment, name, dx, dy):
        """Drags a landmark by (dx, dy) screen pixels; returns where it must land, in image pixels."""
        x, y, v = js("return window.cspnLabel.current().garments[arguments[0]].keypoints[arguments[1]]", garment, name)
        sx, sy = js("return window.cspnLabel.toScreen(arguments[0], arguments[1])", x, y)
        scale = js("return window.cspnLabel.view().scale")
        w, h = canvas.size["width"], canvas.size["height"]
        ActionChains(driver).move_to_element_with_offset(canvas, round(sx) - w // 2, round(sy) - h // 2) \
            .click_and_hold().move_by_offset(dx, dy).release().perform()
        saved()
        return x + dx / scale, y + dy / scale, scale, v

    def on_screen(garments, skip, dx, dy, only=None):
        """A drawn landmark on the canvas that a drag by (dx, dy) keeps on it and inside the photo,
        not in `skip`: (garment, name)."""
        w, h = canvas.size["width"], canvas.size["height"]
        photo_w, photo_h = js("return [window.cspnLabel.current().width, window.cspnLabel.current().height]")
        scale = js("return window.cspnLabel.view().scale")
        for i, g in enumerate(garments):
            for name, (x, y, v) in g["keypoints"].items():
                if v == 0 or (i, name) in skip or only not in (None, i):
                    continue
                sx, sy = js("return window.cspnLabel.toScreen(arguments[0], arguments[1])", x, y)
                inside = 1 < x + dx / scale < photo_w - 1 and 1 < y + dy / scale < photo_h - 1
                if inside and 0 <= sx < w - 1 and 0 <= sy < h - 1 and 0 <= sx + dx < w - 1 and 0 <= sy + dy < h - 1:
                    return i, name
        fail(f"no landmark on screen to drag by ({dx}, {dy}) at zoom {scale:.3f}")

    try:
        driver.get(url)
        loaded()
        canvas = driver.find_element(By.ID, "canvas")
        photo = js("return window.cspnLabel.current()")
        name, garments = photo["name"], photo["garments"]
        if len(garments) < 2:
            fail(f"{len(garments)} suggested garments on {name}: the test needs two (one to delete)")
        if photo["source"] != "model":
            fail("the first photo does not start from the model's suggestion: " + photo["source"])

        # 1. A drag at the fitted zoom.
        first = on_screen(garments, set(), 30, 20)
        want_first = drag_landmark(*first, 30, 20)
        # 2. Two wheel notches at that landmark: the same screen drag moves the next one less.
        x, y, _ = js("return window.cspnLabel.current().garments[arguments[0]].keypoints[arguments[1]]", *first)
        sx, sy = js("return window.cspnLabel.toScreen(arguments[0], arguments[1])", x, y)
        origin = ScrollOrigin.from_element(canvas, round(sx) - canvas.size["width"] // 2, round(sy) - canvas.size["height"] // 2)
        for _ in range(2):
            ActionChains(driver).scroll_from_origin(origin, 0, -100).perform()
            time.sleep(0.2)
        garments = js("return window.cspnLabel.current().garments")
        second = on_screen(garments, {first}, -25, 15, only=first[0])
        want_second = drag_landmark(*second, -25, 15)
        if not want_second[2] > 1.5 * want_first[2]:
            fail(f"zoom did not change the scale: {want_first[2]} then {want_second[2]}")
        driver.save_screenshot(os.path.join(args.screenshots, "label_zoomed.png"))
        driver.find_element(By.ID, "fit").click()
        # 3. Occluded: select the landmark in the table, then its key.
        # 3. A third landmark: visible with its key, then occluded (the tiny model's suggestions may
        # start occluded: the visible step makes the occluded one an edit).
        third_garment = first[0]
        third = next((n for n in garments[third_garment]["keypoints"] if (third_garment, n) not in (first, second)), None)
        if third is None:
            fail("no third landmark to mark occluded")
        driver.find_elements(By.CSS_SELECTOR, "#garments tbody tr")[third_garment].find_element(By.TAG_NAME, "td").click()
        driver.find_element(By.CSS_SELECTOR, f"#landmarks tr[data-name='{third}']").click()
        states = []
        for key in ("v", "o"):
            ActionChains(driver).send_keys(key).perform()
            saved()
            states.append(js("return window.cspnLabel.current().garments[arguments[0]].keypoints[arguments[1]][2]",
                             third_garment, third))
        if states != [2, 1]:
            fail(f"{third}: the keys v then o gave the states {states}, expected [2, 1]")
        # 4. A new lower garment: the button, then a box dragged on the canvas.
        Select(driver.find_element(By.ID, "newCategory")).select_by_visible_text("lower")
        driver.find_element(By.ID, "add").click()
        ActionChains(driver).move_to_element_with_offset(canvas, -60, -40).click_and_hold() \
            .move_by_offset(120, 100).release().perform()
        saved()
        # 5. Delete a garment that none of the edits touched.
        count = len(js("return window.cspnLabel.current().garments"))
        untouched = next(i for i in range(len(garments)) if i != first[0])
        rows = driver.find_elements(By.CSS_SELECTOR, "#garments tbody tr")
        rows[untouched].find_element(By.TAG_NAME, "button").click()
        saved()
        expected_count = count - 1
        shown = js("return window.cspnLabel.current().garments")
        driver.save_screenshot(os.path.join(args.screenshots, "label_edited.png"))

        # Reload: the page shows what the server kept.
        driver.refresh()
        loaded()
        photo_id = next(p["id"] for p in js("return window.cspnLabel.state().photos") if p["name"] == name)
        js("window.cspnLabel.open(arguments[0])", photo_id)
        WebDriverWait(driver, 30).until(lambda d: js("return window.cspnLabel.current().name") == name)
        reloaded = js("return window.cspnLabel.current()")
        if reloaded["source"] != "saved" or len(reloaded["garments"]) != expected_count:
            fail(f"after the reload: {reloaded['source']}, {len(reloaded['garments'])} garments, expected {expected_count}")
        driver.save_screenshot(os.path.join(args.screenshots, "label_reloaded.png"))
    finally:
        server.terminate()
        server.wait(timeout=60)

    # The file, as COCO: one image with the edited garments.
    doc = json.load(open(labels))
    names = doc["categories"][0]["keypoints"]
    images = [im for im in doc["images"] if os.path.basename(im["file_name"]) == name]
    if len(images) != 1:
        fail(f"{labels} has {len(images)} entries for {name}")
    annotations = [a for a in doc["annotations"] if a["image_id"] == images[0]["id"]]
    if len(annotations) != expected_count:
        fail(f"{len(annotations)} garments saved, expected {expected_count}")
    category_names = {c["id"]: c["name"] for c in doc["categories"]}

    def saved_as(garment):
        """The annotation whose box is the page garment's (within 0.05 px; the file rounds)."""
        near = [a for a in annotations if max(abs(p - q) for p, q in zip(a["bbox"], garment["bbox"])) < 0.05]
        if len(near) != 1:
            fail(f"{len(near)} saved garments with the box {garment['bbox']}: saved {[a['bbox'] for a in annotations]}")
        return near[0]

    for garment in shown:
        if category_names[saved_as(garment)["category_id"]] != garment["category"]:
            fail(f"the garment in {garment['bbox']} was saved with another category")

    def keypoint(garment_index, landmark):
        a = saved_as(shown[garment_index])
        k = names.index(landmark)
        return a["keypoints"][3 * k: 3 * k + 3], category_names[a["category_id"]]

    # Garment indices shift once the deleted one is gone.
    def after_delete(i):
        return i - (i > untouched)

    errors = []
    for (g, landmark), (x, y, scale, state) in ((first, want_first), (second, want_second)):
        (px, py, v), _ = keypoint(after_delete(g), landmark)
        error = max(abs(px - x), abs(py - y))
        errors.append(error)
        if error > 1 or v != state:
            fail(f"{landmark} saved at ({px}, {py}, v={v}), dragged to ({x:.2f}, {y:.2f}) at zoom {scale:.3f}")
    (_, _, v), _ = keypoint(after_delete(third_garment), third)
    if v != 1:
        fail(f"{third} marked occluded but saved with v={v}")
    new = [a for a in annotations if category_names[a["category_id"]] == "lower" and a["num_keypoints"] == 4]
    if not new:
        fail("the added lower garment with its 4 landmarks is not in the file")

    run = os.path.join(args.work, "run")
    trained = subprocess.run([args.cspn, "train", "--config", args.train_config, "--data", labels, "--format", "coco",
                              "--out", run, "--quiet", "--set", "train.epochs=1", "--set", "train_detector.epochs=1"],
                             capture_output=True, text=True)
    if trained.returncode != 0 or not os.path.exists(os.path.join(run, "model.cspn")):
        fail("cspn train on the labels: " + trained.stderr[-2000:])
    print(f"ok: {name}: drags saved within {max(errors):.3f} px at two zooms, one occluded, one garment added and one "
          f"deleted ({expected_count} saved), cspn train ran on {labels}; screenshots in {args.screenshots}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
