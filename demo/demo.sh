#!/usr/bin/env bash
# `make demo`: the main job on the embedded default store (no server to start).
# Generates a small image-like dataset, logs it as a version, lists it, downloads
# it back and verifies it.  Uses project "demo" of the default store.
set -euo pipefail
export ARTIFACTFS_PROJECT=${ARTIFACTFS_PROJECT:-demo}
work=$(mktemp -d -t artifactfs-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT

python3 - "$work/mnist" <<'PY'
import os, random, sys
root = sys.argv[1]
rng = random.Random(0)
for split, n in (("train", 200), ("test", 50)):
    os.makedirs(os.path.join(root, split), exist_ok=True)
    for i in range(n):
        with open(os.path.join(root, split, f"{i:04d}.png"), "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n" + rng.randbytes(rng.randrange(500, 3000)))
with open(os.path.join(root, "labels.csv"), "w") as f:
    f.writelines(f"{i},{rng.randrange(10)}\n" for i in range(250))
PY

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
step artifactfs put "$work/mnist" mnist --type dataset --description "sample digits" --metadata source=demo
step artifactfs ls
step artifactfs ls mnist
step artifactfs info mnist:latest
step artifactfs get mnist:latest "$work/download"
step artifactfs verify mnist:latest "$work/download"
step diff -r "$work/mnist" "$work/download"
echo; echo "demo OK: logged, listed, downloaded and verified mnist:latest"
