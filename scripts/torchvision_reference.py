#!/usr/bin/python3
"""Reference data for the C++ backbone parity tests (tests/core/test_backbone.cpp, test_resnet.cpp).

Builds a seeded, randomly initialised torchvision ResNet or MobileNetV2 with non-trivial BatchNorm parameters and
running statistics, and writes to --out:
  weights.pth          torch.save(model.state_dict()) (a zip checkpoint holding an OrderedDict)
  weights.safetensors  the same tensors as safetensors, written here by hand (no safetensors package)
  io.safetensors       "input" [N,3,H,W], "c2".."c5" (the maps at strides 4..32: ResNet layer1..layer4,
                       MobileNetV2 features.3, .6, .13, .18), "logits" [N,1000]

Run with the system interpreter that has torch and torchvision:
  /usr/bin/python3 scripts/torchvision_reference.py --arch resnet50 --out /tmp/ref
"""
import argparse
import json
import os
import struct

import torch
import torchvision

DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}


def write_safetensors(path, tensors):
    """8-byte little-endian header length, JSON header, then the raw little-endian tensor bytes."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        data = t.reshape(-1).view(torch.uint8).numpy()  # raw bytes, no copy
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + data.size]}
        blobs.append(data)
        offset += data.size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            data.tofile(f)
    os.replace(tmp, path)


def build_model(arch, seed, stat_batches):
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)()
    # Random affine BN parameters, then running statistics gathered in train mode, so eval-mode
    # BatchNorm is far from the identity and a wrong key mapping shows in the outputs.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
        model.train()
        for _ in range(stat_batches):
            model(torch.randn(4, 3, 64, 64))
    return model.eval()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", required=True,
                        choices=["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "mobilenet_v2"])
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--input", type=int, nargs=4, default=[1, 3, 64, 64], metavar=("N", "C", "H", "W"))
    parser.add_argument("--stat-batches", type=int, default=3,
                        help="train-mode passes that set the BN running statistics")
    args = parser.parse_args()

    # One thread: the work is small, and OpenMP workers spinning on a busy machine (a parallel
    # test run) cost far more than they save.
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    model = build_model(args.arch, args.seed, args.stat_batches)
    state = model.state_dict()
    torch.save(state, os.path.join(args.out, "weights.pth"))
    write_safetensors(os.path.join(args.out, "weights.safetensors"), state)

    x = torch.randn(*args.input)
    with torch.no_grad():
        io = {"input": x}
        if args.arch.startswith("resnet"):
            y = model.maxpool(model.relu(model.bn1(model.conv1(x))))
            levels = [model.layer1, model.layer2, model.layer3, model.layer4]
        else:
            y = x
            levels = [model.features[0:4], model.features[4:7], model.features[7:14], model.features[14:19]]
        for i, layer in enumerate(levels):
            y = layer(y)
            io["c%d" % (i + 2)] = y
        io["logits"] = model(x)
    write_safetensors(os.path.join(args.out, "io.safetensors"), io)


if __name__ == "__main__":
    main()
