"""CSPN: clothing landmark detection (a Faster R-CNN and a Cascaded Stacked Pyramid Network).

The C++ library underneath, from Python:

    import cspn
    model = cspn.load("runs/robot/model.cspn")
    pipeline = model.pipeline()
    photo = cspn.read_image("photo.jpg")               # H x W x 3 uint8, BGR
    for garment in pipeline.predict(photo):            # dicts, as `cspn predict --json` writes
        print(garment["category"], garment["score"], garment["landmarks"])
    picture = cspn.draw(photo, pipeline.predict(photo))

Errors are ImageError (a DataError), DataError and ConfigError (ValueErrors) and IoError (an
OSError), with the cspn command's one-line messages.
"""
import numpy as np

from . import _cspn
from ._cspn import ConfigError, DataError, ImageError, IoError, decode_image, read_image

__all__ = ["load", "Model", "Pipeline", "Garment", "read_image", "decode_image", "write_image", "draw", "evaluate", "train",
           "data_formats", "ConfigError", "DataError", "ImageError", "IoError"]


def _set_value(value):
    """A Python value as the YAML that `--set key=value` takes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_set_value(v) for v in value) + "]"
    return str(value)


def _sets(sets):
    """Keyword overrides as "section.key=value" pairs: `data__holdout=0.3` or `**{"data.holdout": 0.3}`."""
    pairs = []
    for key, value in sets.items():
        name = key if "." in key else key.replace("__", ".")
        if "." not in name:
            raise ConfigError(f"{key}: config overrides are section.key (e.g. data__holdout=0.3 or "
                              f"**{{'data.holdout': 0.3}})")
        pairs.append(f"{name}={_set_value(value)}")
    return pairs


def _array(image, name):
    """`image` as a NumPy array: arrays as they are, anything with the array interface (a PIL image)
    viewed as one; else a ValueError."""
    if isinstance(image, np.ndarray):
        return image
    if hasattr(image, "__array_interface__") or hasattr(image, "__array__"):
        return np.asarray(image)
    raise ValueError(f"{name}: expected a uint8 array of shape (height, width, 3), got {type(image).__name__}")


def write_image(path, image, color="bgr"):
    """Encodes `image` by the extension of `path` (.png, .jpg, ...) and writes it atomically."""
    _cspn.write_image(str(path), _array(image, "image"), color)


class Garment(dict):
    """One garment: a dict with the keys of `cspn predict`'s JSON (category_id, category, bbox,
    score, keypoints, landmarks, uncertainty). `schema` is the model's schema, which `draw` uses."""

    def __init__(self, values, schema):
        super().__init__(values)
        self.schema = schema


class Pipeline:
    """Both halves of a model on one device: photos in, garments with named landmarks out.
    Threads may share one pipeline; their calls run one at a time."""

    def __init__(self, model, device="cpu"):
        self._pipeline = _cspn.Pipeline(model._model, device)
        self.schema = model.schema

    @property
    def min_score(self):
        """The detection score a garment needs, unless predict is given another."""
        return self._pipeline.min_score

    @property
    def last_timings(self):
        """Where the last predict call spent its time in the C++ library: {"predict_ms" (the whole
        call), "detector_ms", "landmarks_ms", "crops"}. The rest of the call's time is Python's."""
        return self._pipeline.last_timings

    def predict(self, images, min_score=None, max_garments=0, flip=None, color="bgr"):
        """Garments in one image (an H x W x 3 uint8 array) or in each of a list of them.

        One array gives a list of Garment dicts, by decreasing score; a list gives one such list
        per image. `color` is "bgr" (OpenCV) or "rgb" (PIL, matplotlib). `min_score` and `flip`
        (the flip test) default to the model's test settings; `max_garments` 0 keeps all. C-contiguous
        BGR arrays are read in place, without a copy."""
        single = not isinstance(images, (list, tuple))
        batch = [images] if single else list(images)
        batch = [_array(image, f"images[{i}]") for i, image in enumerate(batch)]
        found = self._pipeline.predict(batch, color, min_score, max_garments, flip)
        found = [[Garment(g, self.schema) for g in per_image] for per_image in found]
        return found[0] if single else found


class Model:
    """A model file: `schema` (landmark names, categories, flip pairs), `config` (the resolved
    config it was trained with) and `info()` (parameters and GFLOPs per stage)."""

    def __init__(self, model):
        self._model = model
        self.path = model.path
        self.schema = model.schema
        self.config = model.config

    def info(self):
        """{"parts": [{"name", "params", "gflops"}, ...], "params", "gflops"}: the landmark network
        per part for one crop, as `cspn info` counts it."""
        parts = self._model.costs()
        return {"parts": parts, "params": sum(p["params"] for p in parts), "gflops": sum(p["gflops"] for p in parts)}

    def pipeline(self, device="cpu"):
        """The pipeline of this model on `device` ("cpu", "cuda", "cuda:N")."""
        return Pipeline(self, device)

    def __repr__(self):
        return f"cspn.Model({self.path!r}, schema {self.schema['name']!r})"


def load(path):
    """Loads a model file (.cspn). Raises DataError naming the file when it is not one."""
    return Model(_cspn.load(str(path)))


def draw(image, garments, schema=None, color="bgr"):
    """A copy of `image` with the garments drawn as `cspn predict --out` renders them: boxes,
    categories and scores, and the landmarks with their names."""
    image = _array(image, "image")
    garments = list(garments)
    if not garments:
        return image.copy()
    if schema is None:
        schema = next((g.schema for g in garments if isinstance(g, Garment)), None)
        if schema is None:
            raise ConfigError("draw: these garments carry no schema; pass schema=model.schema")
    return _cspn.draw(image, [dict(g) for g in garments], schema, color)


def evaluate(model, data, format="auto", split="test", boxes="gt", device="cpu", skip_bad=False, **sets):
    """The metrics that `cspn eval --json` writes, as a dict. `model` is a Model or a path; `boxes`
    is "gt", "detector" or "image"; keyword overrides such as data__holdout=0.3 are `--set` pairs."""
    path = model.path if isinstance(model, Model) else str(model)
    return _cspn.evaluate(path, str(data), format, split, boxes, _sets(sets), device, skip_bad)


def _tqdm_progress():
    """A log-record callback that draws a tqdm bar per phase, where tqdm is installed."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    bars = {}

    def on_record(record):
        if record.get("type") != "train":
            return
        phase = record["phase"]
        bar = bars.get(phase)
        if bar is None:
            bar = bars[phase] = tqdm(total=record["total_iters"], desc=phase, unit="it")
        bar.total = record["total_iters"]
        bar.update(record["iter"] - bar.n)
        bar.set_postfix(loss=f"{record['loss']:.3e}")
        if record["iter"] >= record["total_iters"]:
            bar.close()

    return on_record


def train(config, data, format="auto", out="runs/model", unlabelled=None, resume=False, device="cpu", skip_bad=False,
          progress=None, **sets):
    """Trains a model as `cspn train` does and returns the model file's path.

    `config` is a YAML file (or None for the defaults), `out` the run folder. `unlabelled`, a folder
    of photos without labels, joins both halves' training as `cspn train --unlabelled` does (the
    model's confident predictions on them become labels; out/teacher.cspn is the model before
    them). Every log record
    (the lines of log.jsonl, as dicts) goes to `progress(record)`; without one, a tqdm bar is drawn
    where tqdm is installed. Ctrl-C stops the run with its checkpoint written and raises
    KeyboardInterrupt; train(..., resume=True) continues it. One process: for data-parallel
    training launch `cspn train` under torchrun or srun."""
    on_record = progress if progress is not None else _tqdm_progress()
    return _cspn.train("" if config is None else str(config), str(data), format, str(out), resume, _sets(sets),
                       device, skip_bad, "" if unlabelled is None else str(unlabelled), on_record)


def data_formats():
    """The names that `format` takes."""
    return _cspn.data_formats()
