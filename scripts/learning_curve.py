#!/usr/bin/env python3
"""Splits and the table of scripts/learning_curve.sh.

  learning_curve.py split --data DIR --out SPLITS --k 5 10 20
      A fixed held-out split of the robot photos (info.csv): every third photo of each garment type
      (upper, lower), sorted by name, is test; the rest is the training pool. For each k, the first k
      of the pool in a fixed shuffled order, the types in proportion (at least one of each), are
      labelled; the rest of the pool is unlabelled (photos only). k=all, the whole pool, is always
      written. Each folder holds links to the
      photos and, where labelled, its rows of info.csv.
  learning_curve.py table --out OUT
      Reads OUT/*/test.json and writes OUT/learning_curve.md and OUT/learning_curve.png.
"""
import argparse
import csv
import json
import os
import random
import sys
from pathlib import Path


def write_folder(folder, header, rows, source, labelled):
    folder.mkdir(parents=True, exist_ok=True)
    for row in rows:
        link = folder / row[0]
        if not link.exists():
            link.symlink_to((source / row[0]).resolve())
    if labelled:
        tmp = folder / "info.csv.tmp"
        with open(tmp, "w", newline="") as f:
            out = csv.writer(f, lineterminator="\n")
            out.writerow(header)
            out.writerows(rows)
        os.replace(tmp, folder / "info.csv")


def split(args):
    source = Path(args.data)
    with open(source / "info.csv", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = sorted(reader, key=lambda r: r[0])
    kind = header.index("category_type")
    by_type = {}
    for row in rows:
        by_type.setdefault(row[kind], []).append(row)
    test, pool = [], {}
    for t, members in sorted(by_type.items()):
        test += [r for i, r in enumerate(members) if i % 3 == 1]
        pool[t] = [r for i, r in enumerate(members) if i % 3 != 1]
        random.Random(7).shuffle(pool[t])
    out = Path(args.out)
    write_folder(out / "test", header, test, source, True)
    total = sum(len(p) for p in pool.values())
    for k in dict.fromkeys(args.k + ["all"]):  # the whole pool too: the mean shape's
        n = total if k == "all" else int(k)
        if not 0 < n <= total:
            sys.exit(f"--k {k}: the training pool holds {total} photos")
        take = {t: max(1, round(n * len(p) / total)) for t, p in pool.items()}
        largest = max(take, key=lambda t: len(pool[t]))
        take[largest] += n - sum(take.values())
        labelled = [r for t, p in sorted(pool.items()) for r in p[: take[t]]]
        rest = [r for t, p in sorted(pool.items()) for r in p[take[t]:]]
        write_folder(out / f"k{k}" / "labelled", header, labelled, source, True)
        if rest:
            write_folder(out / f"k{k}" / "unlabelled", header, rest, source, False)
        counts = ", ".join(f"{take[t]} of type {t}" for t in sorted(take))
        print(f"k={k}: {len(labelled)} labelled ({counts}), {len(rest)} unlabelled; test {len(test)}")


def ne(path):
    with open(path) as f:
        return json.load(f)["ne_image"]["avg"]


def table(args):
    out = Path(args.out)
    rows = []
    for run in sorted(out.glob("k*")):
        k = run.name[1:]
        labelled = run / "teacher.json" if (run / "teacher.json").exists() else run / "test.json"
        if not labelled.exists():
            continue
        semi = ne(run / "test.json") if (run / "teacher.json").exists() else None
        rows.append((k, ne(labelled), semi))
    rows.sort(key=lambda r: float("inf") if r[0] == "all" else int(r[0]))
    lines = ["| labelled photos | labelled alone | + the rest as --unlabelled | change |", "|---|---|---|---|"]
    for k, alone, semi in rows:
        change = f"{100 * (semi - alone) / alone:+.1f}%" if semi is not None else ""
        lines.append(f"| {k} | {alone:.4f} | {'' if semi is None else f'{semi:.4f}'} | {change} |")
    extra = {}
    for name, label in (("mean_shape", "mean shape of the training pool"), ("synthetic", "synthetic only")):
        if (out / f"{name}.json").exists():
            extra[label] = ne(out / f"{name}.json")
            lines.append(f"| {label} | {extra[label]:.4f} | | |")
    text = "ne_image on the held-out robot photos, true boxes\n\n" + "\n".join(lines) + "\n"
    (out / "learning_curve.md").write_text(text)
    print(text, end="")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [r[0] for r in rows]
    ax.plot(xs, [r[1] for r in rows], "o-", label="labelled alone")
    semi = [(r[0], r[2]) for r in rows if r[2] is not None]
    if semi:
        ax.plot([s[0] for s in semi], [s[1] for s in semi], "s-", label="+ the rest as --unlabelled")
    for (label, value), style in zip(extra.items(), ("--", ":")):
        ax.axhline(value, linestyle=style, color="gray", label=label)
    ax.set_xlabel("labelled training photos")
    ax.set_ylabel("ne_image (held-out, true boxes)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "learning_curve.png", dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("split")
    s.add_argument("--data", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--k", nargs="+", required=True)
    t = sub.add_parser("table")
    t.add_argument("--out", required=True)
    args = parser.parse_args()
    split(args) if args.command == "split" else table(args)


if __name__ == "__main__":
    main()
