#!/usr/bin/env python3
"""How well `cspn predict`'s `uncertainty` ranks photos by their true error.

    scripts/uncertainty_ranking.py --predictions PRED.jsonl --labels info.csv

For each labelled robot photo (info.csv, the ziegler_robot_landmarks layout) the best-scoring
predicted garment is scored against the labels: its ne_image, the mean over the labelled landmarks
of the offset over the image's width and height (the CSV's left/right is the garment's own, so its
pairs are swapped to our image-left convention). Prints the Spearman and Pearson correlations
between uncertainty and that error, and how much of the total error the most uncertain half holds.
"""
import argparse
import csv
import json
import math
import os

SLOTS = ["lc", "rc", "ls", "rs", "lw", "rw", "lh", "rh"]
NAMES = ["left_collar", "right_collar", "left_sleeve", "right_sleeve", "left_waistline", "right_waistline",
         "left_hem", "right_hem"]
SWAP = {"lc": "rc", "rc": "lc", "ls": "rs", "rs": "ls", "lw": "rw", "rw": "lw", "lh": "rh", "rh": "lh"}


def ranks(values):
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2
        i = j + 1
    return out


def pearson(a, b):
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    return cov / math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", required=True)
    parser.add_argument("--labels", required=True)
    args = parser.parse_args()
    labels = {}
    with open(args.labels, newline="") as f:
        for row in csv.DictReader(f):
            labels[row["image_name"]] = row
    pairs = []
    with open(args.predictions) as f:
        for line in f:
            record = json.loads(line)
            name = os.path.basename(record["file"])
            if name not in labels or not record.get("garments"):
                continue
            garment = max(record["garments"], key=lambda g: g["score"])
            if garment.get("uncertainty") is None:
                raise SystemExit("predictions without uncertainty: run cspn predict with the flip test on")
            row, w, h = labels[name], record["width"], record["height"]
            errors = []
            for slot in SLOTS:
                if float(row[f"lm_{slot}_vis"]) != 1.0:
                    continue
                ours = NAMES[SLOTS.index(SWAP[slot])]
                p = garment["landmarks"].get(ours)
                if p is None:  # the detector gave another category
                    errors.append(1.0)
                    continue
                errors.append(math.hypot((p["x"] - float(row[f"lm_{slot}_x"])) / w,
                                         (p["y"] - float(row[f"lm_{slot}_y"])) / h))
            pairs.append((garment["uncertainty"], sum(errors) / len(errors)))
    if len(pairs) < 3:
        raise SystemExit(f"only {len(pairs)} photos with both a prediction and a label")
    u, e = [p[0] for p in pairs], [p[1] for p in pairs]
    spearman = pearson(ranks(u), ranks(e))
    worst_half = sorted(pairs, reverse=True)[: len(pairs) // 2]
    share = sum(p[1] for p in worst_half) / sum(e)
    print(json.dumps({"photos": len(pairs), "spearman": round(spearman, 3), "pearson": round(pearson(u, e), 3),
                      "error_share_of_most_uncertain_half": round(share, 3),
                      "mean_uncertainty": sum(u) / len(u), "mean_ne_image": sum(e) / len(e)}))


if __name__ == "__main__":
    main()
