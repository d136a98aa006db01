#!/usr/bin/env python3
"""Every `curl` line in the code blocks of README.md and docs/*.md works against a running
`cspn serve`: each answers 200 with a JSON body of garments.

The server runs the model given (the fixture model) on a free port; each line runs as written,
from a scratch folder holding photo.jpg (a fixture photo) and photo.png (a PNG made here), with
only the address changed to that port. Exits 1 naming each line that fails.
"""
import argparse
import json
import pathlib
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from test_readme_commands import code_blocks  # noqa: E402


def png(width, height):
    """An RGB PNG of a colour gradient."""
    rows = b"".join(b"\0" + bytes(v for x in range(width) for v in (x * 255 // width, y * 255 // height, 128))
                    for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cspn", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--photo", required=True)
    parser.add_argument("--root", required=True)
    args = parser.parse_args()
    root = pathlib.Path(args.root)
    lines = []
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for line in code_blocks(doc.read_text()):
            if line.strip().startswith("curl "):
                lines.append((doc.relative_to(root), line.strip()))
    if not lines:
        sys.exit("no curl line found in README.md or docs/")
    if shutil.which("curl") is None:
        sys.exit("curl is not installed (scripts/bootstrap.sh installs it)")
    port = free_port()
    work = pathlib.Path(tempfile.mkdtemp(prefix="cspn-curl-"))
    shutil.copy(args.photo, work / "photo.jpg")
    (work / "photo.png").write_bytes(png(160, 120))
    server = subprocess.Popen([args.cspn, "serve", "--model", args.model, "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    failed = []
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                if server.poll() is not None:
                    sys.exit(f"cspn serve exited with {server.returncode}")
                time.sleep(0.1)
        for doc, line in lines:
            command = re.sub(r"127\.0\.0\.1:8080|localhost:8080", f"127.0.0.1:{port}", line)
            run = subprocess.run(command + " -sS -o answer.json -w '%{http_code}'", shell=True, cwd=work,
                                 capture_output=True, text=True, timeout=120)
            status = run.stdout.strip()
            try:
                garments = json.loads((work / "answer.json").read_text())["garments"]
                ok = status == "200" and isinstance(garments, list)
            except (OSError, ValueError, KeyError):
                ok = False
            print(f"{'ok ' if ok else 'FAIL'} {status} {doc}: {line}")
            if not ok:
                failed.append(f"{doc}: {line} -> {status} {run.stderr.strip()} {(work / 'answer.json').read_text()[:200]}")
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    if failed:
        print("\n".join(failed), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
