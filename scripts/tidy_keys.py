#!/usr/bin/env python3
"""Prints "KEY PATH" for every source in build/compile_commands.json whose path matches a regex.

KEY is the SHA-256 of everything clang-tidy's result depends on: the clang-tidy version, the .clang-tidy
configuration (and these two scripts), the compile flags, and the translation unit as clang-14 preprocesses it
with its comments and line markers (every header it includes, expanded). Paths under the checkout are written relative to it, so a clone elsewhere gets the same
keys. Two runs with equal keys give equal findings: scripts/tidy.sh skips a source whose key is recorded in
.ci/tidy-clean (a run that found nothing in it), as ccache skips a compilation it has seen.

Usage: tidy_keys.py SOURCE_ROOT BUILD_DIR REGEX
"""
import concurrent.futures
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys


def preprocess_command(entry):
    args = entry["arguments"] if "arguments" in entry else shlex.split(entry["command"])
    out, skip = ["clang++-14"], False
    for arg in args[1:]:
        if skip:
            skip = False
            continue
        if arg in ("-o", "-c"):
            skip = arg == "-o"
            continue
        if arg == entry["file"]:
            continue
        out.append(arg)
    # -C keeps comments (a NOLINT is input to clang-tidy); line markers stay, as they name each header's file
    # and line (HeaderFilterRegex and NOLINTNEXTLINE depend on them).
    return out + ["-E", "-C", "-w", entry["file"], "-o", "-"]


def main():
    root, build, pattern = sys.argv[1], sys.argv[2], re.compile(sys.argv[3])
    root = os.path.realpath(root)
    with open(os.path.join(build, "compile_commands.json"), encoding="utf-8") as f:
        entries = [e for e in json.load(f) if pattern.search(e["file"])]
    version = subprocess.run(["clang-tidy-14", "--version"], capture_output=True, text=True, check=True).stdout
    # What decides a result besides the source: the checks, and how tidy.sh runs clang-tidy and keys sources.
    config = ""
    for name in (".clang-tidy", "scripts/tidy.sh", "scripts/tidy_keys.py"):
        with open(os.path.join(root, name), encoding="utf-8") as f:
            config += f.read() + "\0"
    common = (version + "\0" + config).encode()
    # The version string names the commit: it cannot change a finding, and keeping it would re-check every
    # source that prints the version after each commit.
    stamp = None
    version_header = os.path.join(build, "generated", "kiln", "version.hpp")
    if os.path.exists(version_header):
        with open(version_header, encoding="utf-8") as f:
            found = re.search(r'#define KILN_VERSION "([^"]+)"', f.read())
            stamp = found.group(1).encode() if found else None

    def key(entry):
        cmd = preprocess_command(entry)
        done = subprocess.run(cmd, cwd=entry["directory"], capture_output=True, check=False)
        if done.returncode != 0:
            return None, entry["file"]  # no key: clang-tidy runs on it and reports why
        flags = " ".join(cmd[1:]).replace(root, "@SRC@")
        text = done.stdout.replace(root.encode(), b"@SRC@")
        if stamp:
            text = text.replace(stamp, b"@VERSION@")
        digest = hashlib.sha256(common + flags.encode() + b"\0" + text).hexdigest()
        return digest, entry["file"]

    # A source compiled into several targets (a program's manual page, also in the unit tests) has an entry
    # each: its key covers all of them.
    keys = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for digest, path in pool.map(key, entries):
            keys.setdefault(path, []).append(digest or "none")
    for path, digests in sorted(keys.items()):
        if "none" in digests:
            print(f"none {path}")
        else:
            print(f"{hashlib.sha256(' '.join(sorted(digests)).encode()).hexdigest()} {path}")


if __name__ == "__main__":
    main()
