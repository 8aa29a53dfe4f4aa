"""Train a small classifier on a dataset version read through the mount, with a
multi-process PyTorch DataLoader, and write the checkpoint into a model
collection's draft/ folder; `--sync` then commits it as the model's next
version, with the data version it was trained on in its metadata.

    python examples/train_digits.py --data /mnt/af/digits/digits@latest \\
        --checkpoint /mnt/af/digits-model/draft/model.pt --sync

The data folder is a version (`NAME:vN`, `NAME:ALIAS`, or the same with '@'):
PNG files in train/<class>/ and test/<class>/ (examples/export_digits.py).
Pillow decodes them; no torchvision needed."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset


class PngFolder(Dataset):
    """(image tensor 1x8x8 in [0, 1], class) for each ROOT/<class>/<file>.png."""

    def __init__(self, root: str):
        self.items = [(os.path.join(root, c, f), int(c))
                      for c in sorted(os.listdir(root)) for f in sorted(os.listdir(os.path.join(root, c)))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[i]
        with Image.open(path) as img:
            pixels = np.asarray(img, dtype=np.float32) / 255.0
        return torch.from_numpy(pixels).unsqueeze(0), label


def model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(16 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))


def train(data: str, epochs: int, workers: int) -> tuple[nn.Module, float]:
    """The trained model and its test accuracy."""
    torch.manual_seed(0)
    net = model()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    loader = DataLoader(PngFolder(os.path.join(data, "train")), batch_size=64, shuffle=True,
                        num_workers=workers, persistent_workers=workers > 0,
                        generator=torch.Generator().manual_seed(0))
    for epoch in range(epochs):
        total = 0.0
        for x, y in loader:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            total += loss.item() * len(y)
        print(f"epoch {epoch + 1}: loss {total / len(loader.dataset):.3f}", flush=True)
    right = seen = 0
    with torch.no_grad():
        for x, y in DataLoader(PngFolder(os.path.join(data, "test")), batch_size=256, num_workers=workers):
            right += int((net(x).argmax(1) == y).sum())
            seen += len(y)
    return net, right / seen


def data_version(data: str) -> str:
    """`NAME:vN` of the version folder `data` (through an alias too), from its xattrs."""
    name = os.getxattr(data, "user.artifact.name").decode()
    return f"{name}:{os.getxattr(data, 'user.artifact.version').decode()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the dataset version folder in the mount")
    ap.add_argument("--checkpoint", help="where to save the weights, e.g. MOUNT/NAME/draft/model.pt")
    ap.add_argument("--sync", action="store_true", help="commit the checkpoint's draft as a new version")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    args = ap.parse_args()
    # Resolve an alias once: every worker then reads one version, the one recorded below,
    # even if a new version is published during training.
    data = os.path.realpath(args.data)
    net, accuracy = train(data, args.epochs, args.workers)
    print(f"test accuracy: {accuracy:.3f}")
    if args.checkpoint:
        collection = os.path.dirname(os.path.dirname(args.checkpoint))
        if not os.path.isdir(collection):  # a new model collection: mkdir, then give it its type
            os.mkdir(collection)
            os.setxattr(collection, "user.artifact.type", b"model")
        torch.save(net.state_dict(), args.checkpoint)
        print(f"saved {args.checkpoint}")
    if args.sync:
        draft = os.path.dirname(args.checkpoint)
        subprocess.run([sys.executable, "-m", "artifactfs", "sync", draft, "--alias", "candidate",
                        "--metadata", f"data={data_version(data)}",
                        "--metadata", f"accuracy={accuracy:.4f}"], check=True)


if __name__ == "__main__":
    main()
