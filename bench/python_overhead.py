#!/usr/bin/python3
"""The Python API's overhead: Pipeline.predict from Python against the C++ example's predict call
on the same photo, batch 1, in alternating rounds (each round: the C++ example's median over
--repeat calls, then Python's median over as many calls, one process each, the same threads).

    PYTHONPATH=build/python /usr/bin/python3 bench/python_overhead.py --model M --photo P [--rounds 5]
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time

PYTHON_SIDE = """
import statistics, sys, time, cspn
pipeline = cspn.load(sys.argv[1]).pipeline()
image = cspn.read_image(sys.argv[2])
pipeline.predict(image)
ms = []
for _ in range(int(sys.argv[3])):
    t = time.perf_counter()
    pipeline.predict(image)
    ms.append(1000 * (time.perf_counter() - t))
print("median predict ms:", statistics.median(ms))
"""


def median_ms(command):
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return float(re.search(r"median predict ms: ([0-9.eE+-]+)", out).group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--photo", required=True)
    ap.add_argument("--example", default="build/cspn_detect_example")
    ap.add_argument("--repeat", type=int, default=20, help="predict calls timed per side and round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    cpp, py = [], []
    for r in range(args.rounds):
        cpp.append(median_ms([args.example, args.model, args.photo, "cpu", "--repeat", str(args.repeat)]))
        py.append(median_ms([sys.executable, "-c", PYTHON_SIDE, args.model, args.photo, str(args.repeat)]))
        print(f"round {r + 1}: C++ {cpp[-1]:.2f} ms, Python {py[-1]:.2f} ms ({100 * (py[-1] / cpp[-1] - 1):+.2f}%)")
    c, p = statistics.median(cpp), statistics.median(py)
    print(f"median over {args.rounds} rounds: C++ {c:.2f} ms, Python {p:.2f} ms, overhead {100 * (p / c - 1):+.2f}%")


if __name__ == "__main__":
    main()
