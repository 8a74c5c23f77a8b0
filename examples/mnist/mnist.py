#!/usr/bin/env python3
"""Train a small convolutional network on MNIST.

The training loop follows the PyTorch MNIST example (Adadelta + StepLR).
The data are read from the four MNIST IDX files in ``--data-dir``
(optionally gzipped); nothing is ever downloaded.  When those files are not
there, the script falls back to scikit-learn's bundled 8x8 digits data set
so that it can always run, offline, in a few seconds.

At the end it prints two lines that are easy to parse::

    Test accuracy: 0.9731
    Test loss: 0.0812

and, when run by onager (``ONAGER_LAUNCH_DIR`` set and ``onager``
importable), reports them with ``onager.log_result``.
"""

import argparse
import gzip
import json
import os
import re
import sys
import time

import numpy as np

# ---------------------------------------------------------------------------
# IDX files (http://yann.lecun.com/exdb/mnist/ describes the format)
# ---------------------------------------------------------------------------

# third byte of the magic number -> big-endian element type
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class IDXError(ValueError):
    """A file is not a well-formed IDX file."""


def parse_idx(data, name="<bytes>"):
    """Decode the bytes of an IDX file into a numpy array.

    The header is a 4-byte magic number (two zero bytes, a type code and the
    number of dimensions), followed by one big-endian uint32 per dimension;
    the elements follow, big-endian, in C order.
    """
    if len(data) < 4:
        raise IDXError(f"{name}: too short to be an IDX file ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    zero, type_code, ndim = data[0:2], data[2], data[3]
    if zero != b"\x00\x00" or type_code not in IDX_DTYPES:
        raise IDXError(
            f"{name}: bad IDX magic number 0x{magic:08x} (expected 0x0000TTNN "
            f"with type code TT in {{{', '.join(f'0x{c:02x}' for c in IDX_DTYPES)}}}); "
            "is this really an (uncompressed or .gz) MNIST IDX file?"
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise IDXError(f"{name}: truncated IDX header ({ndim} dimensions declared)")
    dims = tuple(
        int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)
    )
    dtype = IDX_DTYPES[type_code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    body = len(data) - header_len
    if body != expected:
        raise IDXError(
            f"{name}: IDX header declares shape {dims} of {dtype} "
            f"({expected} bytes of data) but the file holds {body}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def read_idx(path):
    """Read an IDX file, gunzipping it first when its name ends in ``.gz``."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (gzip.BadGzipFile, EOFError) as e:
        raise IDXError(f"{path}: not a valid gzip file ({e})") from e
    return parse_idx(data, name=str(path))


def find_idx_file(data_dir, stem):
    """Path of ``stem`` or ``stem.gz`` under data_dir (or its MNIST/raw/)."""
    for folder in (data_dir, os.path.join(data_dir, "MNIST", "raw")):
        for name in (stem, stem + ".gz"):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
    return None


def load_mnist(data_dir):
    """Return (x_train, y_train, x_test, y_test) as uint8/int64 arrays, or
    None when any of the four files is missing."""
    paths = {key: find_idx_file(data_dir, stem) for key, stem in MNIST_FILES.items()}
    if any(p is None for p in paths.values()):
        return None
    arrays = {key: read_idx(p) for key, p in paths.items()}
    for split in ("train", "test"):
        images, labels = arrays[split + "_images"], arrays[split + "_labels"]
        if images.ndim != 3:
            raise IDXError(f"{paths[split + '_images']}: expected 3 dimensions, got shape {images.shape}")
        if labels.ndim != 1:
            raise IDXError(f"{paths[split + '_labels']}: expected 1 dimension, got shape {labels.shape}")
        if len(images) != len(labels):
            raise IDXError(
                f"{split} set: {len(images)} images but {len(labels)} labels"
            )
        if len(labels) and (labels.min() < 0 or labels.max() > 9):
            raise IDXError(f"{paths[split + '_labels']}: labels must be digits 0..9")
    return (arrays["train_images"], arrays["train_labels"].astype(np.int64),
            arrays["test_images"], arrays["test_labels"].astype(np.int64))


def load_digits_fallback(test_fraction=0.2, split_seed=0):
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0..16).

    The split is fixed (a permutation drawn with ``split_seed``, last 20% for
    testing) so that every run of a sweep sees the same test set.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32)  # (1797, 8, 8)
    y = digits.target.astype(np.int64)
    order = np.random.RandomState(split_seed).permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    train, test = order[:-n_test], order[-n_test:]
    return x[train], y[train], x[test], y[test]


def load_data(data_dir):
    """Return (x_train, y_train, x_test, y_test, description)."""
    mnist = load_mnist(data_dir)
    if mnist is not None:
        x_train, y_train, x_test, y_test = mnist
        x_train = x_train.astype(np.float32) / 255.0
        x_test = x_test.astype(np.float32) / 255.0
        return x_train, y_train, x_test, y_test, "MNIST"
    print(
        f"mnist.py: MNIST IDX files not found in {data_dir!r}; falling back to "
        "scikit-learn's 8x8 digits data set (nothing is downloaded)",
        file=sys.stderr, flush=True,
    )
    x_train, y_train, x_test, y_test = load_digits_fallback()
    return x_train / 16.0, y_train, x_test / 16.0, y_test, "sklearn digits (8x8)"


# ---------------------------------------------------------------------------
# Model and training
# ---------------------------------------------------------------------------

def build_model(image_size):
    """A small CNN sized for the input.

    28x28 images (MNIST): the PyTorch MNIST example's network, two unpadded
    3x3 convolutions, a 2x2 max-pool and 9216 -> 128 -> 10.

    Small images (the 8x8 digits: fewer than 1,500 training images, so one
    epoch is only ~23 steps at batch size 64): padded convolutions, no
    pooling, lighter dropout and batch normalisation after every layer but
    the last, so that a single epoch at the default settings already reaches
    ~97% test accuracy.
    """
    import torch
    from torch import nn

    if image_size >= 16:
        features = nn.Sequential(
            nn.Conv2d(1, 32, 3, 1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, 1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
        )
        hidden = [nn.ReLU(), nn.Dropout(0.5)]
    else:
        features = nn.Sequential(
            nn.Conv2d(1, 32, 3, 1, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, 1, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Dropout(0.1), nn.Flatten(),
        )
        hidden = [nn.BatchNorm1d(128), nn.ReLU(), nn.Dropout(0.25)]
    features.eval()
    with torch.no_grad():
        n_flat = features(torch.zeros(1, 1, image_size, image_size)).shape[1]
    return nn.Sequential(
        features,
        nn.Linear(n_flat, 128),
        *hidden,
        nn.Linear(128, 10),
        nn.LogSoftmax(dim=1),
    )


def train_epoch(model, device, loader, optimizer, epoch, log_interval):
    import torch.nn.functional as F

    model.train()
    n = len(loader.dataset)
    total_loss, seen = 0.0, 0
    for batch_idx, (data, target) in enumerate(loader):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(data)
        seen += len(data)
        if log_interval > 0 and batch_idx % log_interval == 0:
            print(f"Train Epoch: {epoch} [{seen}/{n} ({100.0 * seen / n:.0f}%)]"
                  f"\tLoss: {loss.item():.6f}", flush=True)
    return total_loss / max(seen, 1)


def evaluate(model, device, loader):
    import torch
    import torch.nn.functional as F

    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for data, target in loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            loss += F.nll_loss(output, target, reduction="sum").item()
            correct += (output.argmax(dim=1) == target).sum().item()
    n = len(loader.dataset)
    return loss / n, correct / n


def report_to_onager(accuracy, loss, step=None, **more):
    """Hand the results to onager when this run was launched by it (once per epoch:
    `onager results` shows the last values, `onager report` draws the curves)."""
    if not os.environ.get("ONAGER_LAUNCH_DIR"):
        return
    try:
        import onager
        metrics = dict(accuracy=accuracy, loss=loss, **more)
        if step is not None:
            metrics["step"] = step
        onager.log_result(**metrics)
    except (ImportError, AttributeError) as e:
        print(f"mnist.py: could not report results to onager ({e})",
              file=sys.stderr)


def save_outputs(run_tag, model, results):
    """Write runs/<run_tag>/results.json and model.pt under the cwd."""
    import torch

    safe = re.sub(r"[^A-Za-z0-9._=+-]+", "_", run_tag).strip("._") or "run"
    out_dir = os.path.join("runs", safe)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
        f.write("\n")
    torch.save(model.state_dict(), os.path.join(out_dir, "model.pt"))
    return out_dir


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Train a small CNN on MNIST (or, offline without the "
                    "MNIST files, on scikit-learn's 8x8 digits).")
    p.add_argument("--batch-size", type=int, default=64, metavar="N",
                   help="training batch size (default: 64)")
    p.add_argument("--test-batch-size", type=int, default=1000, metavar="N",
                   help="test batch size (default: 1000)")
    p.add_argument("--epochs", type=int, default=1, metavar="N",
                   help="number of epochs to train (default: 1)")
    p.add_argument("--lr", type=float, default=1.0, metavar="LR",
                   help="Adadelta learning rate (default: 1.0)")
    p.add_argument("--gamma", type=float, default=0.7, metavar="G",
                   help="StepLR learning-rate decay per epoch (default: 0.7)")
    p.add_argument("--no-cuda", action="store_true", default=False,
                   help="train on the CPU even when a GPU is available")
    p.add_argument("--seed", type=int, default=1, metavar="S",
                   help="random seed (default: 1)")
    p.add_argument("--log-interval", type=int, default=10, metavar="N",
                   help="batches between training-loss lines; 0 for none "
                        "(default: 10)")
    p.add_argument("--data-dir", default="./data", metavar="DIR",
                   help="folder holding the MNIST IDX files, plain or .gz "
                        "(default: ./data)")
    p.add_argument("--run-tag", default=None, metavar="TAG",
                   help="name of this run; when given, results.json and "
                        "model.pt are written to runs/TAG/ (characters other "
                        "than letters, digits and ._=+- become _)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    for flag in ("epochs", "batch_size", "test_batch_size"):
        if getattr(args, flag) < 1:
            raise SystemExit(f"mnist.py: --{flag.replace('_', '-')} must be at least 1")

    import torch
    from torch.optim import Adadelta
    from torch.optim.lr_scheduler import StepLR
    from torch.utils.data import DataLoader, TensorDataset

    start = time.time()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    use_cuda = not args.no_cuda and torch.cuda.is_available()
    device = torch.device("cuda" if use_cuda else "cpu")

    x_train, y_train, x_test, y_test, source = load_data(args.data_dir)
    height, width = x_train.shape[1:]
    if height != width:
        raise SystemExit(f"mnist.py: expected square images, got {height}x{width}")
    # standardise with the training set's statistics (0.1307/0.3081 on MNIST)
    mean, std = float(x_train.mean()), float(x_train.std())

    def to_tensors(x, y):
        x = torch.from_numpy(((x - mean) / std).astype(np.float32)).unsqueeze(1)
        return TensorDataset(x, torch.from_numpy(y))

    generator = torch.Generator().manual_seed(args.seed)
    loader_kwargs = {"pin_memory": True} if use_cuda else {}
    # The small-image model uses batch normalisation, which cannot train on a
    # batch of one sample: refuse --batch-size 1 and drop a last batch of one.
    uses_batchnorm = height < 16
    if uses_batchnorm and args.batch_size < 2:
        raise SystemExit(f"mnist.py: --batch-size must be at least 2 for {source}")
    train_loader = DataLoader(to_tensors(x_train, y_train), batch_size=args.batch_size,
                              shuffle=True, generator=generator,
                              drop_last=uses_batchnorm and len(x_train) % args.batch_size == 1,
                              **loader_kwargs)
    test_loader = DataLoader(to_tensors(x_test, y_test), batch_size=args.test_batch_size,
                             shuffle=False, **loader_kwargs)

    tag = f" run {args.run_tag!r}," if args.run_tag else ""
    print(f"Data:{tag} {source}, {len(x_train)} training and {len(x_test)} test "
          f"images of {height}x{width}; device: {device}", flush=True)

    model = build_model(height).to(device)
    optimizer = Adadelta(model.parameters(), lr=args.lr)
    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)

    for epoch in range(1, args.epochs + 1):
        train_loss = train_epoch(model, device, train_loader, optimizer, epoch,
                                 args.log_interval)
        test_loss, accuracy = evaluate(model, device, test_loader)
        print(f"Epoch {epoch}: train loss {train_loss:.4f}, test loss "
              f"{test_loss:.4f}, test accuracy {accuracy:.4f}", flush=True)
        report_to_onager(accuracy, test_loss, step=epoch, train_loss=train_loss)
        scheduler.step()

    elapsed = time.time() - start
    print(f"Test accuracy: {accuracy:.4f}")
    print(f"Test loss: {test_loss:.4f}", flush=True)

    if args.run_tag:
        out_dir = save_outputs(args.run_tag, model, {
            "run_tag": args.run_tag, "data": source, "accuracy": accuracy,
            "loss": test_loss, "epochs": args.epochs, "lr": args.lr,
            "gamma": args.gamma, "batch_size": args.batch_size,
            "seed": args.seed, "seconds": round(elapsed, 2),
        })
        print(f"Wrote {out_dir}/results.json and {out_dir}/model.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
