#!/usr/bin/env python3
"""Prints `cspn eval --json` results side by side in the paper's table layout (Markdown).

    scripts/eval_table.py "NCSPN (whole image)=image.json" "CSPN (detector)=det.json" "GT boxes=gt.json"
    scripts/eval_table.py --stages RUN1/test.json RUN2/test.json

One block per NE protocol (ne_paper, ne_image): a row per file, a column per landmark and the
average; then PCK@0.2, mean pixel error and, where present, detection AP and missed garments; then
each model's stages (`per_stage`). With --stages, only the last: a row per file (Table 3 across
models, the columns within each model).
"""
import json
import sys

# Results written before the JSON named its landmarks: DeepFashion's.
DEEPFASHION_LABELS = {"left_collar": "L.Collar", "right_collar": "R.Collar", "left_sleeve": "L.Sleeve",
                      "right_sleeve": "R.Sleeve", "left_waistline": "L.Waist", "right_waistline": "R.Waist",
                      "left_hem": "L.Hem", "right_hem": "R.Hem"}


def number(value, digits=4):
    if value is None:
        return "-"
    return f"{value:.{digits}f}".lstrip("0") if value < 1 else f"{value:.{digits}f}"


def print_stages(runs):
    depth = max(len(m.get("per_stage", [])) for _, m in runs)
    print("\n| model | " + " | ".join(f"stage {s + 1} ne_image" for s in range(depth)) +
          " | answer ne_paper | answer PCK@0.2 |")
    print("|---" * (depth + 3) + "|")
    for label, m in runs:
        stages = [number(s["ne_image"]["avg"]) for s in m.get("per_stage", [])]
        cells = stages + ["-"] * (depth - len(stages))
        print(f"| {label} | " + " | ".join(cells) + f" | {number(m['ne_paper']['avg'])} | {number(m['pck_0_2'], 3)} |")


def main(args):
    stages_only = bool(args) and args[0] == "--stages"
    if stages_only:
        args = args[1:]
    if not args:
        sys.exit(__doc__)
    runs = []
    for arg in args:
        label, _, path = arg.rpartition("=")
        with open(path) as f:
            runs.append((label or path, json.load(f)))
    if stages_only:
        print_stages(runs)
        return
    first = runs[0][1]  # landmark -> column heading, in slot order
    labels = dict(zip(first["landmarks"], first["labels"])) if "labels" in first else DEEPFASHION_LABELS
    header = list(labels.values()) + ["Avg"]
    for protocol in ("ne_paper", "ne_image"):
        print(f"\n{protocol}:\n")
        print("| boxes | " + " | ".join(header) + " |")
        print("|---" * (len(header) + 1) + "|")
        for label, m in runs:
            per = m[protocol]["per_landmark"]
            cells = [number(per.get(k)) for k in labels] + [number(m[protocol]["avg"])]
            print(f"| {label} | " + " | ".join(cells) + " |")
    print("\n| boxes | PCK@0.2 | mean error px | det AP50 | det AP | matched | missed |")
    print("|---|---|---|---|---|---|---|")
    for label, m in runs:
        print(f"| {label} | {number(m['pck_0_2'], 3)} | {m['epe_px']:.1f} | {number(m.get('det_ap50'))} | "
              f"{number(m.get('det_ap'))} | {m.get('matched', '-')} | {m.get('missed', '-')} |")
    if any("per_stage" in m for _, m in runs):
        print_stages(runs)


if __name__ == "__main__":
    main(sys.argv[1:])
