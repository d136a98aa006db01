#!/usr/bin/env python3
"""Every `cspn` command in the code blocks of README.md and docs/*.md parses with the real CLI, and
every list of data-set formats in them (`fld | ... | auto`) is the CLI's own.

Each command runs with CSPN_PARSE_ONLY=1, so cspn checks its flags, values and the files that must
exist, and runs nothing. The commands are written as run from the repository root; they run here
from a scratch copy of it in which configs/ is the real one and every other file a flag requires
(--model, --list, ...) is an empty placeholder. Exits 1 naming each command that does not parse.
"""
import argparse
import os
import pathlib
import re
import shlex
import subprocess
import sys
import tempfile

# Flags whose value cspn requires to exist, and whether it is a folder.
MUST_EXIST = {"--model": False, "--config": False, "--list": False, "--token-file": False, "--images": True}
CSPN = re.compile(r"^(?:\./)?(?:build[^/\s]*/)?cspn$")


def code_blocks(text):
    """Lines of the fenced code blocks whose language is empty, bash, sh, shell or console."""
    lines, inside, keep = [], False, False
    for line in text.splitlines():
        fence = re.match(r"^\s*```\s*([A-Za-z]*)", line)
        if fence:
            keep = not inside and fence.group(1).lower() in ("", "bash", "sh", "shell", "console")
            inside = not inside
            continue
        if inside and keep:
            lines.append(line)
    return lines


def commands(lines):
    """The cspn invocations among shell lines: (line, argv after the program)."""
    joined, out = [], []
    for line in lines:  # join backslash continuations
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1] + " " + line.strip()
        else:
            joined.append(line.strip().removeprefix("$ "))
    for line in joined:
        for part in re.split(r"\s*(?:&&|;|\|\||\|)\s*", line):
            try:
                words = shlex.split(part, comments=True)
            except ValueError:
                continue
            while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):  # VAR=value prefixes
                words.pop(0)
            for i, w in enumerate(words):  # also after a launcher (torchrun ..., srun ...)
                if CSPN.match(w) and i + 1 < len(words) and not words[i + 1].startswith("-"):
                    out.append((part, words[i + 1:]))
                    break
    return out


def prepare(work, argv):
    for flag, value in zip(argv, argv[1:]):
        if flag in MUST_EXIST and not (work / value).exists():
            path = work / value
            if MUST_EXIST[flag]:
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cspn", required=True, help="the cspn binary")
    ap.add_argument("--root", required=True, help="the repository root")
    args = ap.parse_args()
    root = pathlib.Path(args.root)
    docs = [root / "README.md"] + sorted((root / "docs").glob("*.md"))
    found = [(doc, line, argv) for doc in docs for line, argv in commands(code_blocks(doc.read_text()))]
    if not any(doc.name == "README.md" for doc, _, _ in found):
        print("README.md has no cspn command in its code blocks")
        return 1
    failed = 0
    help_text = subprocess.run([args.cspn, "train", "--help"], capture_output=True, text=True).stdout
    formats = re.search(r"--format TEXT:\{([^}]*)\}", help_text) or re.search(r"(fld \| [a-z0-9| -]*auto)", help_text)
    names = [n.strip() for n in re.split(r"[,|]", formats.group(1))] if formats else []
    for doc in docs:
        for listed in re.findall(r"`(fld \|[^`]*)`", doc.read_text()):
            if [n.strip() for n in listed.split("|")] != names:
                failed += 1
                print(f"FAIL {doc.relative_to(root)}: formats `{listed}`, the CLI has {' | '.join(names)}")
    with tempfile.TemporaryDirectory() as scratch:
        work = pathlib.Path(scratch) / "work" / "repo"
        work.mkdir(parents=True)
        for shared in ("configs", "schemas"):
            (work / shared).symlink_to(root / shared)
        env = dict(os.environ, CSPN_PARSE_ONLY="1")
        for doc, line, argv in found:
            prepare(work, argv)
            run = subprocess.run([args.cspn] + argv, cwd=work, env=env, capture_output=True, text=True)
            if run.returncode != 0:
                failed += 1
                message = (run.stderr or run.stdout).strip().splitlines()
                print(f"FAIL {doc.relative_to(root)}: {line}\n     {message[-1] if message else 'exit %d' % run.returncode}")
    print(f"{len(found) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
