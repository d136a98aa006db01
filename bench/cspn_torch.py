"""CSPN's landmark network written in plain PyTorch, as a PyTorch user would write it.

It is an independent implementation of src/core/model/cspn_net.cpp (same layers, same parameter
names), used by bench/side_by_side.py as the baseline to time and to check the C++ network's outputs
against. It loads the "keypoints.*" tensors of a .cspn model file (safetensors) directly.
"""
import json
import struct

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_safetensors(path):
    """Tensors and metadata of a safetensors file: 8-byte header length, JSON header, raw data."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        data = bytearray(f.read())
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        dtype = SAFETENSORS_DTYPES[entry["dtype"]]
        flat = torch.frombuffer(data, dtype=dtype, count=(end - begin) // torch.tensor([], dtype=dtype).element_size(),
                                offset=begin) if end > begin else torch.empty(0, dtype=dtype)
        tensors[name] = flat.reshape(entry["shape"]).clone()
    return tensors, metadata


def conv_bn(cin, cout, kernel, relu):
    layers = [nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


def heatmap_head(channels, landmarks):
    return nn.Sequential(*conv_bn(channels, channels, 1, True), nn.Conv2d(channels, landmarks, 3, padding=1))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 with a projected shortcut when the shape changes."""

    def __init__(self, cin, width, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


def resize_to(x, like):
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def top_down(levels):
    """Coarse to fine: each level plus the upsampled level below it."""
    out = list(levels)
    for i in range(len(out) - 2, -1, -1):
        out[i] = out[i] + resize_to(out[i + 1], out[i])
    return out


class CPNStage(nn.Module):
    def __init__(self, in_channels, channels, landmarks):
        super().__init__()
        self.lateral = nn.ModuleList(conv_bn(c, channels, 1, True) for c in in_channels)
        self.global_head = nn.ModuleList(heatmap_head(channels, landmarks) for _ in in_channels)  # training only
        self.refine = nn.ModuleList(
            nn.Sequential(*[Bottleneck(channels, channels // 2, channels) for _ in range(level)])
            for level in range(len(in_channels)))
        self.fuse = Bottleneck(len(in_channels) * channels, channels // 2, channels)
        self.head = nn.Conv2d(channels, landmarks, 3, padding=1)

    def forward(self, features):
        encoder = [lateral(c) for lateral, c in zip(self.lateral, features)]
        pyramid = top_down(encoder)
        decoder = [refine(p) for refine, p in zip(self.refine, pyramid)]
        decoder[0] = self.fuse(torch.cat([resize_to(d, pyramid[0]) for d in decoder], 1))
        return encoder, decoder, self.head(decoder[0])


def fine_channels(channels, stride):
    """The fine level's width at stride 2 or 1."""
    return min(max(channels // 4, 8), 16) if stride == 1 else min(max(channels // 2, 8), 32)


class CascadeStage(nn.Module):
    """stride 4: the correction on stage 1's maps; stride 2 or 1: on a finer level, fed by the image's
    features at that stride (a stem that the first stage at it computes), the upsampled decoder, the
    previous answer and the previous stage's fine level."""

    def __init__(self, channels, landmarks, stride=4, previous_stride=4, levels=4):
        super().__init__()
        self.stride, self.previous_stride = stride, previous_stride
        self.cross_encoder = nn.ModuleList(conv_bn(channels, channels, 1, False) for _ in range(levels))
        self.cross_decoder = nn.ModuleList(conv_bn(channels, channels, 1, False) for _ in range(levels))
        self.encoder = nn.ModuleList(
            Bottleneck(channels, channels // 2, channels, 1 if level == 0 else 2) for level in range(levels))
        self.lateral = nn.ModuleList(conv_bn(channels, channels, 1, True) for _ in range(levels))
        self.heatmap_in = nn.Conv2d(landmarks, channels, 1)
        head_channels = channels
        if stride < 4:
            f = head_channels = fine_channels(channels, stride)
            if previous_stride != stride:
                self.stem = nn.Sequential(nn.Conv2d(3, f, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(f),
                                          nn.ReLU(inplace=True), *conv_bn(f, f, 3, True))
            if previous_stride < 4:
                self.fine_cross = conv_bn(fine_channels(channels, previous_stride), f, 1, False)
            self.fine_lateral = conv_bn(channels, f, 1, False)
            self.fine_heatmap_in = nn.Conv2d(landmarks, f, 1)
            self.fine_block = nn.Sequential(*conv_bn(f, f, 3, True), Bottleneck(f, f // 2, f))
        self.head = heatmap_head(head_channels, landmarks)

    def forward(self, image, encoder, decoder, heatmaps, stem, fine):
        coarse = heatmaps if self.previous_stride == 4 else F.avg_pool2d(heatmaps, 4 // self.previous_stride)
        cross = [ce(e) + cd(d) for ce, cd, e, d in zip(self.cross_encoder, self.cross_decoder, encoder, decoder)]
        new_encoder = [self.encoder[0](F.relu(cross[0] + self.heatmap_in(coarse)))]
        for level in range(1, len(cross)):
            new_encoder.append(self.encoder[level](new_encoder[-1]) + cross[level])
        new_decoder = top_down([lateral(e) for lateral, e in zip(self.lateral, new_encoder)])
        if self.stride == 4:
            return new_encoder, new_decoder, heatmaps + self.head(new_decoder[0]), stem, fine
        size = (new_decoder[0].shape[-2] * 4 // self.stride, new_decoder[0].shape[-1] * 4 // self.stride)
        up = lambda x: x if x.shape[-2:] == size else F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if self.previous_stride != self.stride:
            stem = self.stem(image)
        answer = up(heatmaps)
        x = up(self.fine_lateral(new_decoder[0])) + stem + self.fine_heatmap_in(answer)
        if self.previous_stride < 4:
            x = x + self.fine_cross(up(fine))
        fine = self.fine_block(F.relu(x))
        return new_encoder, new_decoder, answer + self.head(fine), stem, fine


class CSPNNet(nn.Module):
    def __init__(self, backbone="resnet50", stages=4, channels=256, landmarks=8, refine_stride=1):
        super().__init__()
        self.backbone = getattr(torchvision.models, backbone)(weights=None)
        del self.backbone.fc
        expansion = 4 if backbone in ("resnet50", "resnet101", "resnet152") else 1
        in_channels = [64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]
        self.stage1 = CPNStage(in_channels, channels, landmarks)
        strides = [max(refine_stride, 4 >> i) for i in range(stages)]  # each stage halves the one before's
        for s in range(2, stages + 1):
            self.add_module(f"stage{s}", CascadeStage(channels, landmarks, strides[s - 1], strides[s - 2]))
        self.stages = stages

    def features(self, x):
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        c2 = b.layer1(x)
        c3 = b.layer2(c2)
        c4 = b.layer3(c3)
        return [c2, c3, c4, b.layer4(c4)]

    def forward(self, x):
        """Every stage's heatmaps: [B,K,H/4,W/4] for stage 1, then each at half the stride before it, down
        to refine_stride."""
        encoder, decoder, heatmaps = self.stage1(self.features(x))
        stem = fine = None
        outputs = [heatmaps]
        for s in range(2, self.stages + 1):
            encoder, decoder, heatmaps, stem, fine = getattr(self, f"stage{s}")(x, encoder, decoder, heatmaps, stem, fine)
            outputs.append(heatmaps)
        return outputs


def load_model_file(path):
    """The landmark network of a .cspn model file (or of `cspn bench --io`'s file), in eval mode, and
    the file's config (a dict)."""
    tensors, metadata = read_safetensors(path)
    config = json.loads(metadata["cspn.config"])
    k = config["model"]["keypoints"]
    landmarks = tensors["keypoints.stage1.head.weight"].shape[0]
    # Model files of format 2 predate refine_stride: their later stages answer at stride 4.
    refine_stride = k.get("refine_stride", 4 if int(metadata.get("cspn.format", "3")) < 3 else 1)
    net = CSPNNet(k["backbone"], k["stages"], k["channels"], landmarks, refine_stride)
    state = {name[len("keypoints."):]: t for name, t in tensors.items() if name.startswith("keypoints.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [m for m in missing if "global_head" not in m]
    if missing or unexpected:
        raise ValueError(f"{path}: keys do not match the PyTorch network: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return net.eval(), config
