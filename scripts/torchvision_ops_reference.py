#!/usr/bin/python3
"""torchvision reference outputs for the C++ detection tests (tests/core/test_ops.cpp, test_box_coder.cpp, test_vgg.cpp).

Usage: torchvision_ops_reference.py {ops|boxes|vgg16} DIR

The tests write their inputs into DIR as raw little-endian tensors (<name>.bin) listed in
DIR/inputs.json = {"tensors": {name: {"dtype", "shape"}}, "cases": [...]}; this script runs
each case through torchvision and writes DIR/outputs.json + <name>.bin the same way.

  ops:   nms, batched_nms, roi_align and roi_pool (outputs and input gradients)
  boxes: AnchorGenerator, BoxCoder encode/decode, Matcher
  vgg16: no inputs; writes seeded torchvision vgg16() "features" weights, an input, the conv5_3
         map (features[:30]), and the names and shapes of the whole vgg16 state dict
"""
import json
import os
import sys

import numpy as np
import torch
import torchvision
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList

DTYPES = {"float32": np.float32, "float64": np.float64, "int64": np.int64}
NAMES = {np.dtype(v): k for k, v in DTYPES.items()}


def read_inputs(folder):
    with open(os.path.join(folder, "inputs.json")) as f:
        manifest = json.load(f)
    tensors = {}
    for name, entry in manifest["tensors"].items():
        data = np.fromfile(os.path.join(folder, name + ".bin"), dtype=DTYPES[entry["dtype"]])
        tensors[name] = torch.from_numpy(data.reshape(entry["shape"]))
    return tensors, manifest.get("cases", [])


def write_outputs(folder, tensors):
    entries = {}
    for name, tensor in tensors.items():
        array = np.ascontiguousarray(tensor.detach().cpu().numpy())
        array.tofile(os.path.join(folder, name + ".bin"))
        entries[name] = {"dtype": NAMES[array.dtype], "shape": list(array.shape)}
    with open(os.path.join(folder, "outputs.json"), "w") as f:
        json.dump({"tensors": entries}, f)


def run_ops(folder):
    t, cases = read_inputs(folder)
    out = {}
    for case in cases:
        name, op = case["name"], case["op"]
        if op == "nms":
            out[name] = torchvision.ops.nms(t[case["boxes"]], t[case["scores"]], case["iou"])
        elif op == "batched_nms":
            out[name] = torchvision.ops.batched_nms(t[case["boxes"]], t[case["scores"]],
                                                    t[case["idxs"]], case["iou"])
        elif op in ("roi_align", "roi_pool"):
            x = t[case["input"]].clone().requires_grad_(True)
            if op == "roi_align":
                y = torchvision.ops.roi_align(x, t[case["rois"]], case["output_size"],
                                              case["spatial_scale"], case["sampling_ratio"],
                                              case["aligned"])
            else:
                y = torchvision.ops.roi_pool(x, t[case["rois"]], case["output_size"],
                                             case["spatial_scale"])
            y.backward(t[case["grad_out"]])
            out[name] = y
            out[name + "_grad"] = x.grad
        else:
            raise ValueError("unknown op " + op)
    write_outputs(folder, out)


def run_boxes(folder):
    t, cases = read_inputs(folder)
    out = {}
    for case in cases:
        name, op = case["name"], case["op"]
        if op == "anchors":
            gen = AnchorGenerator(sizes=(tuple(case["sizes"]),),
                                  aspect_ratios=(tuple(case["ratios"]),))
            h, w = case["image_size"]
            fh, fw = case["feature_size"]
            images = ImageList(torch.zeros(1, 3, h, w), [(h, w)])
            out[name] = gen(images, [torch.zeros(1, 1, fh, fw)])[0]
        elif op == "encode":
            coder = det_utils.BoxCoder(tuple(case["weights"]))
            out[name] = coder.encode_single(t[case["boxes"]], t[case["reference"]])
        elif op == "decode":
            coder = det_utils.BoxCoder(tuple(case["weights"]))
            out[name] = coder.decode_single(t[case["deltas"]], t[case["reference"]])
        elif op == "matcher":
            matcher = det_utils.Matcher(case["high"], case["low"], case["allow_low_quality"])
            out[name] = matcher(t[case["quality"]])
        else:
            raise ValueError("unknown op " + op)
    write_outputs(folder, out)


def run_vgg16(folder):
    torch.manual_seed(0)
    model = torchvision.models.vgg16().eval()
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        conv5_3 = model.features[:30](x)
    out = {"features." + k: v for k, v in model.features.state_dict().items()}
    out["input"] = x
    out["conv5_3"] = conv5_3
    write_outputs(folder, out)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    with open(os.path.join(folder, "state_dict_shapes.json"), "w") as f:
        json.dump(shapes, f)


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("ops", "boxes", "vgg16"):
        sys.exit(__doc__)
    torch.set_num_threads(2)
    {"ops": run_ops, "boxes": run_boxes, "vgg16": run_vgg16}[sys.argv[1]](sys.argv[2])


if __name__ == "__main__":
    main()
