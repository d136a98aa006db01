#!/usr/bin/python3
"""CSPN side by side with what a user would run instead, in one run, on the same photos, resized to
the same detector input, with the same thread count:

  - our whole pipeline (`cspn bench --parts pipeline`): the fast configuration (configs/robot.yaml,
    or a trained model file with --fast-model) in float32 and bfloat16, and the paper's
    (configs/paper.yaml: VGG16 Faster R-CNN with RoI pooling + ResNet-101, 4 stages);
  - torchvision's Keypoint R-CNN (keypointrcnn_resnet50_fpn, random weights: the cost does not depend
    on them), keeping as many detections per image as ours;
  - our landmark network written in PyTorch (bench/cspn_torch.py), loaded with the same weights; its
    outputs must match the C++ network's (checked first), and its time is the baseline.

Every contender runs once per round, in turn, the order reversed every other round (--rounds,
default 3): the figures are medians over the rounds, and each ratio is also printed round by round,
since this kind of machine drifts by a third between runs minutes apart. Prints the tables, writes OUT/side_by_side.json and
OUT/side_by_side.png. Run it with the system Python, which has Debian's torch and torchvision:

  /usr/bin/python3 bench/side_by_side.py [--fast-model run/model.cspn] [--rounds 3] [--out bench-results]
  /usr/bin/python3 bench/side_by_side.py --check-io FILE     (parity of `cspn bench --io FILE` only)
"""
import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def timed_in_turn(fns, iters, warmup=2):
    """Median ms of each function, one call of each per round (as `cspn bench` times its cases), so
    that their ratios do not depend on how the machine's speed drifts."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(iters):
        for fn, t in zip(fns, times):
            start = time.perf_counter()
            fn()
            t.append((time.perf_counter() - start) * 1000)
    return [statistics.median(t) for t in times]


def timed(fn, iters, warmup=2):
    return timed_in_turn([fn], iters, warmup)[0]


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def blas_library():
    """The BLAS library LibTorch's matrix products go through, as mapped into this process, and
    OpenBLAS's kernel for this CPU ("" when not OpenBLAS)."""
    import ctypes
    import torch
    torch.mm(torch.ones(64, 64), torch.ones(64, 64))
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if "blas" in os.path.basename(path):
                try:
                    corename = ctypes.CDLL(path).openblas_get_corename
                    corename.restype = ctypes.c_char_p
                    return os.path.realpath(path), corename().decode()
                except (OSError, AttributeError):
                    return os.path.realpath(path), ""
    return "", ""


def better_blas_core(core):
    """The OPENBLAS_CORETYPE `cspn` itself chooses where OpenBLAS fell back to a generic kernel (see
    better_blas_core in include/cspn/core/runtime.hpp), so that both sides get the same BLAS."""
    with open("/proc/cpuinfo") as f:
        flags = next((line.split() for line in f if line.startswith("flags")), [])
    core = core.lower()
    if "avx512f" in flags:
        return "" if core in ("skylakex", "cooperlake", "sapphirerapids") else "SkylakeX"
    if "avx2" in flags and core in ("prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "sandybridge"):
        return "Haswell"
    return ""


# ---------------------------------------------------------------- parts run in their own process


def check_io(path):
    """Max |PyTorch - C++| relative to the largest C++ value, per stage."""
    import torch
    sys.path.insert(0, HERE)
    import cspn_torch
    net, _ = cspn_torch.load_model_file(path)
    tensors, _ = cspn_torch.read_safetensors(path)
    with torch.inference_mode():
        outputs = net(tensors["input"])
    errors = []
    for s, out in enumerate(outputs, 1):
        reference = tensors[f"stage{s}"]
        errors.append(float((out - reference).abs().max() / reference.abs().max().clamp_min(1e-12)))
    return errors


def part_krcnn(args):
    """torchvision's Keypoint R-CNN on the photos: latency at batch 1, throughput by batch, memory."""
    import torch
    import torchvision
    from torchvision.io import read_image
    torch.set_num_threads(args.threads)
    model = torchvision.models.detection.keypointrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_keypoints=8, min_size=args.size, max_size=args.size * 4 // 3,
        box_detections_per_img=args.garments, box_score_thresh=0.0).eval()
    photos = [read_image(os.path.join(args.photos, f)).float() / 255 for f in sorted(os.listdir(args.photos))]
    detections = []
    with torch.inference_mode():
        for image in photos:  # warm-up pass, counting detections
            detections.append(len(model([image])[0]["boxes"]))
        times = []
        for _ in range(args.iters):
            for image in photos:
                start = time.perf_counter()
                model([image])
                times.append((time.perf_counter() - start) * 1000)
        throughput = []
        for batch in args.batches:
            images = [photos[i % len(photos)] for i in range(batch)]
            ms = timed(lambda: model(images), args.iters, warmup=1) if batch > 1 else statistics.median(times)
            throughput.append({"batch": batch, "images_per_s": batch * 1000 / ms})
    return {"pipeline_ms": statistics.median(times), "pipeline_p90_ms": percentile(times, 0.9),
            "garments": sum(detections) / len(detections), "throughput": throughput,
            "best_images_per_s": max(t["images_per_s"] for t in throughput), "peak_rss_mb": peak_rss_mb()}


def part_torch_cspn(args):
    """Our landmark network in PyTorch: parity with the C++ outputs, inference and a training step."""
    import torch
    import torch.nn.functional as F
    sys.path.insert(0, HERE)
    import cspn_torch
    torch.set_num_threads(args.threads)
    errors = check_io(args.io)
    net, config = cspn_torch.load_model_file(args.io)
    h, w = config["model"]["keypoints"]["input_size"]
    result = {"parity_max_relative_error": errors, "inference": []}
    with torch.inference_mode():
        inputs = {batch: torch.randn(batch, 3, h, w) for batch in (1, 16)}
        ms = timed_in_turn([f for x in inputs.values() for f in (lambda x=x: net.features(x), lambda x=x: net(x))],
                           args.iters)
        for i, batch in enumerate(inputs):
            backbone_ms, network_ms = ms[2 * i], ms[2 * i + 1]
            result["inference"].append({"batch": batch, "backbone_ms": backbone_ms, "network_ms": network_ms,
                                        "ms_per_crop": network_ms / batch})
    # A training step as a PyTorch user would write it: L2 on stage 1, L2 with online hard keypoint
    # mining (top 4) on the later stages, the GlobalNet heads supervised too, Adam.
    batch = config["train"]["batch_size"]
    net.train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, h, w)
    targets = {}  # one per heatmap size: the later stages answer on finer maps

    def target(maps):
        return targets.setdefault(tuple(maps.shape[2:]), torch.rand(*maps.shape))

    def step():
        optimizer.zero_grad()
        features = net.features(x)
        encoder, decoder, heatmaps = net.stage1(features)
        pyramid = cspn_torch.top_down(encoder)
        loss = F.mse_loss(heatmaps, target(heatmaps))
        for head, p in zip(net.stage1.global_head, pyramid):
            loss = loss + F.mse_loss(cspn_torch.resize_to(head(p), heatmaps), target(heatmaps))
        stem = fine = None
        for s in range(2, net.stages + 1):
            encoder, decoder, heatmaps, stem, fine = getattr(net, f"stage{s}")(x, encoder, decoder, heatmaps, stem, fine)
            per_landmark = ((heatmaps - target(heatmaps)) ** 2).mean(dim=(2, 3))
            loss = loss + per_landmark.topk(min(4, per_landmark.shape[1]), dim=1).values.mean()
        loss.backward()
        optimizer.step()

    result["train_step"] = {"batch": batch, "ms": timed(step, args.iters, warmup=1)}
    result["peak_rss_mb"] = peak_rss_mb()
    return result


# ---------------------------------------------------------------- the driver


def run_part(name, args, extra):
    command = [sys.executable, os.path.abspath(__file__), "--part", name, "--threads", str(args.threads),
               "--iters", str(args.iters), "--size", str(args.size), "--garments", str(args.garments)] + extra
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def run_cspn(args, name, extra, photos):
    out = os.path.join(args.out, f"cspn-{name}.json")
    command = [args.cspn, "bench", "--parts", "pipeline", "--threads", str(args.threads), "--iters", str(args.iters),
               "--garments", str(args.garments), "--images", photos, "--image-sizes", str(args.size),
               "--json", out] + extra
    log("$ " + " ".join(command))
    subprocess.run(command, check=True, stdout=sys.stderr)
    with open(out) as f:
        return json.load(f)


def photo_folder(source, count, folder):
    """A folder of links to the first `count` photos of `source` (sorted by name)."""
    os.makedirs(folder, exist_ok=True)
    for old in os.listdir(folder):
        os.unlink(os.path.join(folder, old))
    names = sorted(f for f in os.listdir(source) if f.lower().endswith((".jpg", ".jpeg", ".png")))[:count]
    if not names:
        sys.exit(f"error: no photos in {source}")
    for name in names:
        os.symlink(os.path.abspath(os.path.join(source, name)), os.path.join(folder, name))
    return folder


def chart(summary, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("no matplotlib (Debian: python3-matplotlib): chart skipped")
        return False
    rows = summary["pipeline"]
    names = [r["name"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    left.barh(names, [r["pipeline_ms"] for r in rows], color="#4a7bb7")
    left.set_xlabel("ms per image, batch 1 (median)")
    left.set_title("whole pipeline, detector input %dx%d" % tuple(summary["detector_input"]))
    left.invert_yaxis()
    nets = summary["landmark_network"]
    labels = [f"{r['implementation']} b{r['batch']}" for r in nets]
    right.barh(labels, [r["ms_per_crop"] for r in nets], color="#d08c2b")
    right.set_xlabel("ms per crop")
    right.set_title("landmark network")
    right.invert_yaxis()
    fig.suptitle(f"{summary['threads']} CPU threads, {summary['photos']} photos, "
                 f"medians over {summary['rounds']} round(s)")
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=110)
    os.replace(path + ".tmp.png", path)
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cspn", default=os.path.join(ROOT, "build", "cspn"))
    parser.add_argument("--photos", default=os.path.join(ROOT, "..", "shared", "data", "ziegler_robot_landmarks"))
    parser.add_argument("--count", type=int, default=36, help="photos timed (the paper configuration takes 8)")
    parser.add_argument("--fast-model", help="a trained model file for the fast configuration "
                                             "(default: untrained weights of configs/robot.yaml)")
    parser.add_argument("--eval-split", default="all",
                        help="with --fast-model: the photos' split scored in float32 and bfloat16 (all | test)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=3, help="timed passes over the photos")
    parser.add_argument("--rounds", type=int, default=3,
                        help="every contender runs once per round, in turn (medians over rounds reported)")
    parser.add_argument("--size", type=int, default=240, help="detector input, shorter side (longer: 4/3 of it)")
    parser.add_argument("--garments", type=int, default=1, help="garments per image, for every contender")
    parser.add_argument("--out", default="bench-results")
    parser.add_argument("--skip-paper", action="store_true", help="leave out the (slow) paper configuration")
    parser.add_argument("--check-io", metavar="FILE", help="only compare bench/cspn_torch.py with `cspn bench --io FILE`")
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--io", help=argparse.SUPPRESS)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    if args.check_io:
        try:
            import torchvision  # noqa: F401 (the PyTorch port builds its backbone from torchvision)
        except ImportError as e:
            print(f"skipped: {e} (Debian: python3-torch python3-torchvision)")
            sys.exit(77)
        errors = check_io(args.check_io)
        print("PyTorch vs C++, max relative error per stage: " + ", ".join(f"{e:.2e}" for e in errors))
        sys.exit(0 if max(errors) < 1e-4 else 1)
    if args.part:
        print(json.dumps({"krcnn": part_krcnn, "torch-cspn": part_torch_cspn}[args.part](args)))
        return

    os.makedirs(args.out, exist_ok=True)
    if "OPENBLAS_CORETYPE" not in os.environ:  # for every process started below, ours and PyTorch's
        core = better_blas_core(blas_library()[1])
        if core:
            os.execve(sys.executable, [sys.executable] + sys.argv, dict(os.environ, OPENBLAS_CORETYPE=core))
    blas, blas_core = blas_library()
    log(f"BLAS: {blas or 'none found'}, kernel {blas_core or '?'}")
    if "openblas" not in blas:
        log("warning: LibTorch's matrix products do not go through OpenBLAS (install libopenblas0-openmp): "
            "Keypoint R-CNN's box head will be far slower than it should")
    photos = photo_folder(args.photos, args.count, os.path.join(args.out, "photos"))
    # The fast configuration: configs/robot.yaml's model without the flip tests, which run the detector's
    # box head and the landmark network a second time on mirrored input (README, Benchmarks: what each
    # costs and what it buys on the robot photos).
    fast_sets = ["--set", "test.detector_flip=false", "--set", "test.flip=false"]
    fast = (["--model", args.fast_model] if args.fast_model else ["--config", os.path.join(ROOT, "configs", "robot.yaml")]) \
        + fast_sets
    io = os.path.join(args.out, "fast-io.safetensors")
    paper_photos = None if args.skip_paper else \
        photo_folder(args.photos, min(args.count, 8), os.path.join(args.out, "photos-paper"))

    # Every contender runs once per round, in turn, the order reversed every other round: on a
    # machine whose speed drifts, contenders of one round ran minutes apart rather than a quarter of
    # an hour, a steady drift favours none of them over two rounds, and the median over rounds drops
    # the odd round. The first round starts with the fast pipeline, which writes the PyTorch port's
    # weights (--io).
    contenders = {
        "fast": lambda r: run_cspn(args, f"fast-{r}", fast + ["--image-batches", "1", "4", "16"]
                                   + (["--io", io] if r == 1 else []), photos),
        "fast-bf16": lambda r: run_cspn(args, f"fast-bf16-{r}", fast + ["--image-batches", "1", "--no-train-step",
                                                                        "--set", "test.precision=bfloat16"], photos),
        "paper": lambda r: run_cspn(args, f"paper-{r}", ["--config", os.path.join(ROOT, "configs", "paper.yaml"),
                                                         "--image-batches", "1", "4", "--no-train-step"], paper_photos),
        "krcnn": lambda r: run_part("krcnn", args, ["--photos", photos]),
        "torch-cspn": lambda r: run_part("torch-cspn", args, ["--io", io]),
    }
    if not paper_photos:
        del contenders["paper"]
    rounds = []
    for r in range(1, args.rounds + 1):
        order = list(contenders) if r % 2 else list(reversed(contenders))
        log(f"round {r} of {args.rounds}: " + ", ".join(order))
        rounds.append({name: contenders[name](r) for name in order})

    data_json = os.path.join(args.out, "cspn-data.json")
    subprocess.run([args.cspn, "bench", "--parts", "data", "--threads", str(args.threads), "--data", args.photos,
                    "--json", data_json] + fast, check=True, stdout=sys.stderr)
    with open(data_json) as f:
        data_rate = max(r["crops_per_s"] for r in json.load(f)["data"])
    ne = {}
    if args.fast_model:  # landmark accuracy in float32 and bfloat16, true boxes, on the photos
        for name, sets in (("float32", fast_sets), ("bfloat16", fast_sets + ["--set", "test.precision=bfloat16"]),
                           ("float32 with the landmark flip test", ["--set", "test.flip=true"])):
            out = os.path.join(args.out, f"eval-{name.replace(' ', '-')}.json")
            subprocess.run([args.cspn, "eval", "--model", args.fast_model, "--data", args.photos, "--split",
                            args.eval_split, "--quiet", "--json", out] + sets, check=True, stdout=sys.stderr)
            with open(out) as f:
                ne[name] = json.load(f)["ne_image"]["avg"]

    def across(values):
        """The median over rounds, and the rounds' own values."""
        return {"median": statistics.median(values), "rounds": values}

    def pipeline_row(one, name):
        return one["krcnn"] if name == "krcnn" else one[name]["pipeline"][0]

    pipeline = []
    for name, label in (("fast", "CSPN fast (robot.yaml, no flip tests)"), ("fast-bf16", "CSPN fast, bfloat16"),
                        ("paper", "CSPN paper (VGG16 + ResNet-101, 4 stages)"),
                        ("krcnn", "Keypoint R-CNN R50-FPN (torchvision)")):
        if name not in rounds[0]:
            continue
        rows = [pipeline_row(one, name) for one in rounds]
        per_batch = {}
        for row in rows:
            for t in row["throughput"]:
                per_batch.setdefault(t["batch"], []).append(t["images_per_s"])
        best_batch = max(per_batch, key=lambda b: statistics.median(per_batch[b]))
        vs_krcnn = across([pipeline_row(one, "krcnn")["pipeline_ms"] / row["pipeline_ms"] for one, row in zip(rounds, rows)])
        pipeline.append({"name": label, "pipeline_ms": statistics.median(r["pipeline_ms"] for r in rows),
                         "pipeline_p90_ms": statistics.median(r["pipeline_p90_ms"] for r in rows),
                         "garments": rows[0]["garments"], "best_batch": best_batch,
                         "best_images_per_s": statistics.median(per_batch[best_batch]),
                         "peak_rss_mb": max(r["peak_rss_mb"] for r in rows),
                         "speedup_vs_krcnn": vs_krcnn["median"], "speedup_vs_krcnn_rounds": vs_krcnn["rounds"]})

    def cpp_rows(one, name):
        return {r["batch"]: r for r in one[name]["landmark_network"]["inference"]}

    networks = []
    for b in (1, 16):
        per_round = []  # per round: C++ float32, C++ bfloat16 and PyTorch rows of batch b
        for one in rounds:
            ours, bf16 = cpp_rows(one, "fast")[b], cpp_rows(one, "fast-bf16")[b]
            torch_row = next(r for r in one["torch-cspn"]["inference"] if r["batch"] == b)
            backbone_rate = ours["backbone_gflops"] / torch_row["backbone_ms"] * 1e3
            network_rate = ours["network_gflops"] / torch_row["network_ms"] * 1e3
            torch_row = {"ms_per_crop": torch_row["ms_per_crop"], "network_gflop_s": network_rate,
                         "backbone_gflop_s": backbone_rate, "ratio": network_rate / backbone_rate}
            per_round.append((ours, bf16, torch_row))
        for i, implementation in enumerate(("C++ (cspn)", "C++ bfloat16", "PyTorch")):
            rows = [r[i] for r in per_round]
            row = {"implementation": implementation, "batch": b}
            for key in ("ms_per_crop", "network_gflop_s", "backbone_gflop_s", "ratio", "speedup_vs_float32"):
                if key in rows[0]:
                    row[key] = statistics.median(r[key] for r in rows)
            row["ratio_rounds"] = [r["ratio"] for r in rows]
            if i == 0:
                vs_torch = across([t["ms_per_crop"] / c["ms_per_crop"] for c, _, t in per_round])
                row["speedup_vs_pytorch"], row["speedup_vs_pytorch_rounds"] = vs_torch["median"], vs_torch["rounds"]
            networks.append(row)
    batch16_vs_1 = across([cpp_rows(one, "fast")[1]["ms_per_crop"] / cpp_rows(one, "fast")[16]["ms_per_crop"]
                           for one in rounds])
    cpp_steps = [one["fast"]["landmark_network"]["train_step"] for one in rounds]
    torch_steps = [one["torch-cspn"]["train_step"] for one in rounds]
    step_ratio = across([t["ms"] / c["ms"] for c, t in zip(cpp_steps, torch_steps)])
    train_step = {"C++": {"batch": cpp_steps[0]["batch"], "ms": statistics.median(s["ms"] for s in cpp_steps)},
                  "PyTorch": {"batch": torch_steps[0]["batch"], "ms": statistics.median(s["ms"] for s in torch_steps)},
                  "speedup": step_ratio["median"], "speedup_rounds": step_ratio["rounds"]}
    parity = [max(e) for e in zip(*(one["torch-cspn"]["parity_max_relative_error"] for one in rounds))]
    detector_input = rounds[0]["fast"]["pipeline"][0]["detector_input"]
    summary = {"threads": args.threads, "photos": len(os.listdir(photos)), "rounds": args.rounds,
               "detector_input": detector_input, "blas": blas, "blas_core": blas_core, "pipeline": pipeline,
               "landmark_network": networks, "batch16_vs_batch1_per_crop": batch16_vs_1, "train_step": train_step,
               "parity_max_relative_error": parity, "data_crops_per_s": data_rate, "ne_image": ne, "raw": rounds}

    def listed(values):
        return " ".join(f"{v:.2f}" for v in values)

    print(f"\nSide by side: {summary['photos']} photos, detector input {detector_input[0]}x{detector_input[1]}, "
          f"{args.garments} garment(s) per image, {args.threads} threads, BLAS {os.path.basename(blas) or '?'} "
          f"({blas_core or '?'} kernel); medians over {args.rounds} round(s), every contender once per round")
    print("PyTorch port vs C++ outputs, max relative error per stage: "
          + ", ".join(f"{e:.1e}" for e in parity))
    print(f"\n{'pipeline':44} {'ms/img':>8} {'p90':>8} {'best img/s':>14} {'peak MB':>8} {'vs KRCNN':>9}  per round")
    for r in pipeline:
        print(f"{r['name']:44} {r['pipeline_ms']:8.1f} {r['pipeline_p90_ms']:8.1f} "
              f"{r['best_images_per_s']:8.2f} (b{r['best_batch']:<2}) {r['peak_rss_mb']:8.0f} "
              f"{r['speedup_vs_krcnn']:8.2f}x  {listed(r['speedup_vs_krcnn_rounds'])}")
    print(f"\n{'landmark network':20} {'batch':>5} {'ms/crop':>9} {'GFLOP/s':>9} {'backbone GFLOP/s':>17} {'ratio':>6}"
          f"  ratio per round")
    for r in networks:
        print(f"{r['implementation']:20} {r['batch']:5d} {r['ms_per_crop']:9.1f} {r['network_gflop_s']:9.1f} "
              f"{r['backbone_gflop_s']:17.1f} {r['ratio']:6.0%}  {' '.join(f'{v:.0%}' for v in r['ratio_rounds'])}")
    for r in networks:
        if "speedup_vs_pytorch" in r:
            print(f"C++ against PyTorch at batch {r['batch']}: {r['speedup_vs_pytorch']:.2f}x faster per crop "
                  f"(per round {listed(r['speedup_vs_pytorch_rounds'])})")
    print("bfloat16 against float32 timed in turn in one process: " + ", ".join(
        f"batch {r['batch']} {r['speedup_vs_float32']:.2f}x" for r in networks if "speedup_vs_float32" in r))
    print(f"C++ float32, batch 16 against batch 1 per crop (timed in turn): {batch16_vs_1['median']:.2f}x as fast "
          f"(per round {listed(batch16_vs_1['rounds'])})")
    cpp_step, torch_step = train_step["C++"], train_step["PyTorch"]
    print(f"\ntraining step, batch {cpp_step['batch']}: C++ {cpp_step['ms']:.0f} ms, PyTorch {torch_step['ms']:.0f} ms "
          f"({step_ratio['median']:.2f}x; per round {listed(step_ratio['rounds'])})")
    train_rate = cpp_step["batch"] * 1000 / cpp_step["ms"]
    print(f"data pipeline {data_rate:.0f} crops/s against {train_rate:.1f} crops/s trained: {data_rate / train_rate:.1f}x")
    if ne:
        print(f"ne_image on {args.photos} ({args.eval_split}): float32 {ne['float32']:.5f}, bfloat16 "
              f"{ne['bfloat16']:.5f} ({(ne['bfloat16'] / ne['float32'] - 1) * 100:+.2f}%); with the landmark flip "
              f"test {ne['float32 with the landmark flip test']:.5f}")
    json_path = os.path.join(args.out, "side_by_side.json")
    with open(json_path + ".tmp", "w") as f:
        json.dump(summary, f, indent=2)
    os.replace(json_path + ".tmp", json_path)
    png = os.path.join(args.out, "side_by_side.png")
    print(f"\nwrote {json_path}" + (f" and {png}" if chart(summary, png) else ""))
    if max(summary["parity_max_relative_error"]) >= 1e-4:
        sys.exit("error: the PyTorch port and the C++ network disagree (see the parity line)")


if __name__ == "__main__":
    main()
