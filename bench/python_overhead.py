#!/usr/bin/python3
"""The Python API's overhead: Pipeline.predict from Python against the C++ example's predict call
on the same photo, batch 1, in rounds (each round: the C++ example's median over --repeat calls and
Python's median over as many, one process each, the same threads; the order reversed every other
round).
Processes minutes apart see a machine whose speed drifts, so it also reports, call by call in the
Python process, the share of each call spent outside the C++ library's predict (last_timings).

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
ms, outside = [], []
for _ in range(int(sys.argv[3])):
    t = time.perf_counter()
    pipeline.predict(image)
    ms.append(1000 * (time.perf_counter() - t))
    outside.append(ms[-1] - pipeline.last_timings["predict_ms"])
print("median predict ms:", statistics.median(ms))
print("median outside ms:", statistics.median(outside))
"""


def medians(command):
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return {k: float(v) for k, v in re.findall(r"median (\w+) ms: ([0-9.eE+-]+)", out)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--photo", required=True)
    ap.add_argument("--example", default="build/cspn_detect_example")
    ap.add_argument("--repeat", type=int, default=20, help="predict calls timed per side and round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    cpp, py, outside = [], [], []
    for r in range(args.rounds):
        sides = [("cpp", [args.example, args.model, args.photo, "cpu", "--repeat", str(args.repeat)]),
                 ("py", [sys.executable, "-c", PYTHON_SIDE, args.model, args.photo, str(args.repeat)])]
        measured = dict((name, medians(command)) for name, command in (sides if r % 2 == 0 else sides[::-1]))
        cpp.append(measured["cpp"]["predict"])
        python = measured["py"]
        py.append(python["predict"])
        outside.append(python["outside"])
        print(f"round {r + 1}: C++ {cpp[-1]:.2f} ms, Python {py[-1]:.2f} ms ({100 * (py[-1] / cpp[-1] - 1):+.2f}%), "
              f"of which outside the library {outside[-1]:.3f} ms")
    c, p, o = statistics.median(cpp), statistics.median(py), statistics.median(outside)
    print(f"median over {args.rounds} rounds: C++ {c:.2f} ms, Python {p:.2f} ms ({100 * (p / c - 1):+.2f}%); "
          f"time outside the library per call {o:.3f} ms = {100 * o / p:.3f}% of the call")


if __name__ == "__main__":
    main()
