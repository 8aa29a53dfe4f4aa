#!/usr/bin/env bash
# `make demo`: the main job on the embedded default store (no server to start), on
# real data: scikit-learn's bundled digits (1,797 8x8 images, shipped with the
# package, nothing downloaded) exported as PNG files in class folders.
#   1. log the images as a version; list, download and verify it
#   2. mount the store
#   3. train a small PyTorch model reading the version through the mount with a
#      multi-process DataLoader; print the test accuracy
#   4. write the checkpoint into draft/ of a model collection
#   5. sync it as a new version, with the data version in its metadata
# Uses project "demo" of the default store.
set -euo pipefail
export ARTIFACTFS_PROJECT=${ARTIFACTFS_PROJECT:-demo}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d -t artifactfs-demo.XXXXXX)
mnt="$work/mnt"
cleanup() { mountpoint -q "$mnt" 2>/dev/null && artifactfs umount "$mnt"; rm -rf "$work"; }
trap cleanup EXIT

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
step python "$here/examples/export_digits.py" "$work/digits"
step artifactfs put "$work/digits" digits --type dataset --description "scikit-learn digits as PNG" \
    --metadata source=sklearn.datasets.load_digits
step artifactfs ls
step artifactfs info digits:latest
step artifactfs get digits:latest "$work/download"
step artifactfs verify digits:latest "$work/download"

mkdir -p "$mnt"
step artifactfs mount "$mnt"
step ls -l "$mnt/digits"
step ls "$mnt/digits/digits@latest/train/3" --width=100
step python "$here/examples/train_digits.py" --data "$mnt/digits/digits@latest" \
    --checkpoint "$mnt/digits-model/draft/model.pt" --sync
step ls -l "$mnt/digits-model"
step getfattr -n user.artifact.metadata "$mnt/digits-model/digits-model:latest"
step artifactfs umount "$mnt"
step artifactfs ls digits-model
echo; echo "demo OK: logged real images, trained through the mount, synced the model with its data version"
