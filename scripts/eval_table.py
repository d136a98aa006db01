#!/usr/bin/env python3
"""Prints `cspn eval --json` results side by side in the paper's table layout (Markdown).

    scripts/eval_table.py "NCSPN (whole image)=image.json" "CSPN (detector)=det.json" "GT boxes=gt.json"

One block per NE protocol (ne_paper, ne_image): a row per file, a column per landmark and the
average; then PCK@0.2, mean pixel error and, where present, detection AP and missed garments.
"""
import json
import sys

LANDMARKS = ["left_collar", "right_collar", "left_sleeve", "right_sleeve",
             "left_waistline", "right_waistline", "left_hem", "right_hem"]
HEADER = ["L.Collar", "R.Collar", "L.Sleeve", "R.Sleeve", "L.Waist", "R.Waist", "L.Hem", "R.Hem", "Avg"]


def number(value, digits=4):
    if value is None:
        return "-"
    return f"{value:.{digits}f}".lstrip("0") if value < 1 else f"{value:.{digits}f}"


def main(args):
    if not args:
        sys.exit(__doc__)
    runs = []
    for arg in args:
        label, _, path = arg.rpartition("=")
        with open(path) as f:
            runs.append((label or path, json.load(f)))
    for protocol in ("ne_paper", "ne_image"):
        print(f"\n{protocol}:\n")
        print("| boxes | " + " | ".join(HEADER) + " |")
        print("|---" * (len(HEADER) + 1) + "|")
        for label, m in runs:
            per = m[protocol]["per_landmark"]
            cells = [number(per.get(k)) for k in LANDMARKS] + [number(m[protocol]["avg"])]
            print(f"| {label} | " + " | ".join(cells) + " |")
    print("\n| boxes | PCK@0.2 | mean error px | det AP50 | det AP | matched | missed |")
    print("|---|---|---|---|---|---|---|")
    for label, m in runs:
        print(f"| {label} | {number(m['pck_0_2'], 3)} | {m['epe_px']:.1f} | {number(m.get('det_ap50'))} | "
              f"{number(m.get('det_ap'))} | {m.get('matched', '-')} | {m.get('missed', '-')} |")


if __name__ == "__main__":
    main(sys.argv[1:])
