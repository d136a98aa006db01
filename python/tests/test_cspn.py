"""The Python API (python/cspn) against the cspn command and the C++ library's own behaviour.

Run by ctest (python.api) with PYTHONPATH at the build's python/ folder and these variables:
CSPN_CLI (the cspn binary), CSPN_MODEL (the tests' tiny both-halves model), CSPN_SCENES (its
synthetic scenes, COCO) and CSPN_SHARED (../shared/data; tests of real photos skip without it).
"""
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

import cspn

CLI = os.environ["CSPN_CLI"]
MODEL = os.environ["CSPN_MODEL"]
SCENES = pathlib.Path(os.environ["CSPN_SCENES"])
ROBOT = pathlib.Path(os.environ.get("CSPN_SHARED", "../shared/data")) / "ziegler_robot_landmarks"
TINY_CONFIG = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "tiny_pipeline.yaml"


def photos(count=4):
    if not ROBOT.is_dir():
        pytest.skip(f"{ROBOT} is absent: the tests on real photos need ../shared/data")
    return sorted(str(p) for p in ROBOT.glob("*.jpg"))[:count]


@pytest.fixture(scope="module")
def pipeline():
    return cspn.load(MODEL).pipeline()


def cli(*args, check=True):
    run = subprocess.run([CLI, *args], capture_output=True, text=True, env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
    if check and run.returncode != 0:
        raise AssertionError(f"cspn {' '.join(args)}: exit {run.returncode}: {run.stderr}")
    return run


def same_garments(a, b, tol=1e-3):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["category"] == y["category"]
        assert x["score"] == pytest.approx(y["score"], abs=1e-5)
        assert np.allclose(x["bbox"], y["bbox"], atol=tol)
        assert np.allclose(x["keypoints"], y["keypoints"], atol=tol)


def test_model_facts():
    model = cspn.load(MODEL)
    assert model.schema["name"] == "deepfashion"
    assert model.config["model"]["keypoints"]["stages"] == 2
    info = model.info()
    assert [p["name"] for p in info["parts"]] == ["backbone", "stage1", "stage2"]
    assert info["params"] > 0 and info["gflops"] > 0


def test_predictions_equal_the_cli(tmp_path, pipeline):
    files = photos()
    out = tmp_path / "predictions.json"
    cli("predict", "--model", MODEL, "--min-score", "0", "--json", str(out), "--quiet", *files)
    expected = json.loads(out.read_text())
    by_image = {img["file_name"]: img["id"] for img in expected["images"]}
    got = pipeline.predict([cspn.read_image(f) for f in files], min_score=0)
    for f, garments in zip(files, got):
        theirs = [a for a in expected["annotations"] if a["image_id"] == by_image[f]]
        same_garments(garments, theirs)
    assert sum(len(g) for g in got) > 0, "the fixture model should find garments in the photos"
    timings = pipeline.last_timings
    assert timings["crops"] == sum(len(g) for g in got)
    assert timings["predict_ms"] >= timings["detector_ms"] + timings["landmarks_ms"] > 0


def test_bgr_and_rgb_give_the_same_answer(pipeline):
    image = cspn.read_image(photos(1)[0])
    same_garments(pipeline.predict(image), pipeline.predict(np.ascontiguousarray(image[..., ::-1]), color="rgb"), 0)


def test_a_non_contiguous_array_works(pipeline):
    image = cspn.read_image(photos(1)[0])
    view = image[::2, ::2]
    assert not view.flags["C_CONTIGUOUS"]
    same_garments(pipeline.predict(view), pipeline.predict(np.ascontiguousarray(view)), 0)


def test_wrong_dtype_or_shape_is_a_value_error_naming_both(pipeline):
    image = cspn.read_image(photos(1)[0])
    with pytest.raises(ValueError, match=r"uint8 array of shape \(height, width, 3\), got float32 of shape \(\d+, \d+, 3\)"):
        pipeline.predict(image.astype(np.float32))
    with pytest.raises(ValueError, match=r"uint8 array of shape \(height, width, 3\), got uint8 of shape \(\d+, \d+\)"):
        pipeline.predict(image[..., 0].copy())
    with pytest.raises(ValueError, match="expected a uint8 array"):
        pipeline.predict([[1, 2, 3]])
    with pytest.raises(cspn.ConfigError, match="color=hsv"):
        pipeline.predict(image, color="hsv")


def test_each_error_kind_where_the_cli_gives_its_exit_code(tmp_path):
    missing = str(tmp_path / "missing.jpg")
    with pytest.raises(cspn.ImageError, match="missing.jpg") as e:
        cspn.read_image(missing)
    assert isinstance(e.value, ValueError) and isinstance(e.value, cspn.DataError)
    with pytest.raises(cspn.ImageError, match="upload"):
        cspn.decode_image(b"not an image", "upload")

    not_a_model = tmp_path / "model.cspn"
    not_a_model.write_text("hello")
    with pytest.raises(cspn.DataError, match="model.cspn") as e:
        cspn.load(not_a_model)
    assert cli("info", "--model", str(not_a_model), check=False).returncode == 3
    assert str(e.value) in cli("info", "--model", str(not_a_model), check=False).stderr

    with pytest.raises(cspn.ConfigError, match="train.no_such_key"):
        cspn.train(None, SCENES, "coco", tmp_path / "run", **{"train.no_such_key": 1})
    assert cli("train", "--data", str(SCENES), "--format", "coco", "--out", str(tmp_path / "run"),
               "--set", "train.no_such_key=1", check=False).returncode == 2

    blocker = tmp_path / "file"
    blocker.write_text("a file where the run folder should be")
    with pytest.raises(cspn.IoError) as e:
        cspn.train(TINY_CONFIG, SCENES, "coco", blocker / "run")
    assert isinstance(e.value, OSError)
    assert cli("train", "--config", str(TINY_CONFIG), "--data", str(SCENES), "--format", "coco",
               "--out", str(blocker / "run"), check=False).returncode == 4


def test_train_writes_a_model_that_load_reads(tmp_path):
    records = []
    path = cspn.train(TINY_CONFIG, SCENES, "coco", tmp_path / "run", progress=records.append,
                      model__detector__enabled=False, train__epochs=1)
    model = cspn.load(path)
    assert model.config["train"]["epochs"] == 1 and not model.config["model"]["detector"]["enabled"]
    assert any(r["type"] == "train" and r["phase"] == "keypoints" for r in records)
    assert records[-1]["type"] == "epoch"


def test_train_with_unlabelled_photos(tmp_path):
    records = []
    path = cspn.train(TINY_CONFIG, SCENES, "coco", tmp_path / "run", unlabelled=SCENES / "img", progress=records.append,
                      train__iters=2, train_detector__iters=2, semi__keypoint_iters=1, semi__detector_iters=1,
                      semi__min_score=0)
    pseudo = [r for r in records if r["type"] == "pseudo_labels"]
    assert len(pseudo) == 1 and pseudo[0]["images"] > 0
    assert {"keypoints-round1", "detector-round1"} <= {r["phase"] for r in records if r["type"] == "start"}
    assert (tmp_path / "run" / "teacher.cspn").exists()
    assert cspn.load(path).config["data"]["unlabelled"] == os.path.abspath(SCENES / "img")


def test_evaluate_is_the_json_of_cspn_eval(tmp_path):
    metrics = cspn.evaluate(MODEL, SCENES, "coco", split="test")
    out = tmp_path / "metrics.json"
    cli("eval", "--model", MODEL, "--data", str(SCENES), "--format", "coco", "--json", str(out), "--quiet")
    expected = json.loads(out.read_text())
    assert metrics["ne_image"]["avg"] == pytest.approx(expected["ne_image"]["avg"], rel=1e-6)
    assert metrics["split"] == "test" and metrics["model"] == MODEL


INTERRUPTED_RUN = """
import sys, cspn
def progress(record):
    if record["type"] == "train":
        print("iter", record["iter"], flush=True)
cspn.train(sys.argv[1], sys.argv[2], "coco", sys.argv[3], progress=progress, model__detector__enabled=False,
           train__iters=80, train__log_every=1)
"""


def test_ctrl_c_in_train_leaves_a_resumable_run(tmp_path):
    run = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", INTERRUPTED_RUN, str(TINY_CONFIG), str(SCENES), str(run)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
    for line in child.stdout:
        if line.startswith("iter"):
            break
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=300)
    assert child.returncode != 0
    assert "KeyboardInterrupt" in stderr and "resume continues" in stderr
    assert (run / "checkpoint-keypoints.pt").exists() and not (run / "model.cspn").exists()
    records = []
    path = cspn.train(TINY_CONFIG, SCENES, "coco", run, resume=True, progress=records.append,
                      model__detector__enabled=False, train__iters=80, train__log_every=1)
    iters = [r["iter"] for r in records if r["type"] == "train"]
    assert iters[0] > 1 and iters[-1] == 80, "the resumed run continues where the first stopped"
    assert cspn.load(path).config["train"]["iters"] == 80


def test_two_threads_predicting_at_once_get_the_serial_answers(pipeline):
    images = [cspn.read_image(f) for f in photos(4)]
    serial = [pipeline.predict(image) for image in images]
    results = {}

    def work(name, order):
        results[name] = [(i, pipeline.predict(images[i])) for i in order]

    threads = [threading.Thread(target=work, args=("a", range(4))), threading.Thread(target=work, args=("b", [3, 2, 1, 0]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for name in ("a", "b"):
        for i, garments in results[name]:
            same_garments(garments, serial[i], 0)


def test_draw_renders_the_garments(pipeline):
    image = cspn.read_image(photos(1)[0])
    garments = pipeline.predict(image, min_score=0)
    picture = cspn.draw(image, garments)
    assert picture.shape == image.shape and picture.dtype == np.uint8
    assert (picture != image).any() and (cspn.draw(image, []) == image).all()
    with pytest.raises(cspn.ConfigError, match="schema"):
        cspn.draw(image, [dict(g) for g in garments])
