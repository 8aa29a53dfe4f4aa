#!/usr/bin/env bash
# `make demo`: the main job on the embedded default store (no server to start).
# Generates a small image-like dataset, logs it as a version, lists it, downloads
# it back and verifies it; then mounts the store, reads the version as plain paths,
# writes into the collection's draft/ folder and syncs it as the next version.
# Uses project "demo" of the default store.
set -euo pipefail
export ARTIFACTFS_PROJECT=${ARTIFACTFS_PROJECT:-demo}
work=$(mktemp -d -t artifactfs-demo.XXXXXX)
mnt="$work/mnt"
cleanup() { mountpoint -q "$mnt" 2>/dev/null && artifactfs umount "$mnt"; rm -rf "$work"; }
trap cleanup EXIT

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

mkdir -p "$mnt"
step artifactfs mount "$mnt"
step ls -l "$mnt/mnist"
step ls "$mnt/mnist/mnist:latest/train" --width=100
step cmp "$mnt/mnist/mnist:latest/train/0001.png" "$work/mnist/train/0001.png"
step getfattr -d "$mnt/mnist/mnist:latest"
step cp "$work/mnist/labels.csv" "$mnt/mnist/draft/labels-v2.csv"
step rm "$mnt/mnist/draft/test/0000.png"
step artifactfs sync "$mnt/mnist/draft" --alias candidate
step ls -l "$mnt/mnist"
step artifactfs umount "$mnt"
step artifactfs ls mnist
echo; echo "demo OK: logged, listed, downloaded, verified, mounted, read, wrote and synced mnist"
