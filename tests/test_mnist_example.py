"""Tests for the example program examples/mnist/mnist.py.

The IDX-loader tests need only numpy.  The tests that run the program need
torch and scikit-learn in the interpreter running pytest; they use an empty
data folder, so the program falls back to scikit-learn's bundled 8x8 digits
and nothing is downloaded.
"""

import gzip
import importlib.util
import json
import os
import re
import struct
import subprocess
import sys
import types
from pathlib import Path

import pytest

np = pytest.importorskip(
    "numpy", reason="numpy is not installed (pip install -r examples/mnist/requirements.txt)"
)

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "mnist" / "mnist.py"

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_SKLEARN = importlib.util.find_spec("sklearn") is not None
needs_torch_and_sklearn = pytest.mark.skipif(
    not (HAVE_TORCH and HAVE_SKLEARN),
    reason="running mnist.py needs torch and scikit-learn "
           "(pip install -r examples/mnist/requirements.txt)",
)

FALLBACK_MESSAGE = "falling back to scikit-learn's 8x8 digits"


@pytest.fixture(scope="module")
def mnist():
    spec = importlib.util.spec_from_file_location("mnist_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def idx_bytes(arr, type_code=0x08, dtype=">u1"):
    """Encode arr as an IDX file, written here independently of mnist.py."""
    header = bytes([0, 0, type_code, arr.ndim])
    header += b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + np.ascontiguousarray(arr, dtype=dtype).tobytes()


def write_idx(path, arr, **kw):
    data = idx_bytes(arr, **kw)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(data)
    return path


# ---------------------------------------------------------------------------
# (a) IDX loader
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_images_and_labels(mnist, tmp_path, suffix):
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, size=(5, 28, 28)).astype(np.uint8)
    labels = np.array([7, 2, 1, 0, 4], dtype=np.uint8)
    img_path = write_idx(tmp_path / ("train-images-idx3-ubyte" + suffix), images)
    lbl_path = write_idx(tmp_path / ("train-labels-idx1-ubyte" + suffix), labels)

    got_images = mnist.read_idx(img_path)
    got_labels = mnist.read_idx(lbl_path)
    assert got_images.shape == (5, 28, 28)
    assert got_images.dtype == np.uint8
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_read_idx_big_endian_wider_types(mnist, tmp_path):
    values = np.array([[1, -2, 70000], [-300000, 5, 0]], dtype=np.int32)
    path = write_idx(tmp_path / "ints-idx2", values, type_code=0x0C, dtype=">i4")
    got = mnist.read_idx(path)
    assert got.shape == (2, 3)
    np.testing.assert_array_equal(got, values)

    floats = np.array([0.5, -1.25, 3.0], dtype=np.float32)
    path = write_idx(tmp_path / "floats-idx1", floats, type_code=0x0D, dtype=">f4")
    np.testing.assert_array_equal(mnist.read_idx(path), floats)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_wrong_magic_is_a_clear_error(mnist, tmp_path, suffix):
    good = idx_bytes(np.zeros((2, 3, 3), dtype=np.uint8))
    path = tmp_path / ("bad-idx3-ubyte" + suffix)
    bad = b"\x12\x34" + good[2:]
    (gzip.open if suffix else open)(path, "wb").write(bad)
    with pytest.raises(ValueError, match=r"bad IDX magic number 0x12340803"):
        mnist.read_idx(path)


def test_corrupt_gzip_is_a_clear_error(mnist, tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(idx_bytes(np.zeros((1, 2, 2), dtype=np.uint8)))  # not gzipped
    with pytest.raises(mnist.IDXError, match="not a valid gzip file"):
        mnist.read_idx(path)


def test_unknown_type_code_is_an_error(mnist):
    data = bytes([0, 0, 0x42, 1]) + struct.pack(">I", 1) + b"\x00"
    with pytest.raises(mnist.IDXError, match="magic"):
        mnist.parse_idx(data)


def test_size_mismatch_is_an_error(mnist):
    data = idx_bytes(np.zeros((2, 4, 4), dtype=np.uint8))
    with pytest.raises(mnist.IDXError, match=r"declares shape \(2, 4, 4\)"):
        mnist.parse_idx(data[:-1])
    with pytest.raises(mnist.IDXError, match="truncated IDX header"):
        mnist.parse_idx(data[:9])
    with pytest.raises(mnist.IDXError, match="too short"):
        mnist.parse_idx(b"\x00\x00")


def write_fake_mnist(folder, n_train=64, n_test=32, gz=False):
    rng = np.random.RandomState(1)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}",
                  rng.randint(0, 256, size=(n, 28, 28)).astype(np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}",
                  rng.randint(0, 10, size=n).astype(np.uint8))


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_finds_the_four_files(mnist, tmp_path, gz):
    write_fake_mnist(tmp_path, n_train=6, n_test=4, gz=gz)
    x_train, y_train, x_test, y_test = mnist.load_mnist(str(tmp_path))
    assert x_train.shape == (6, 28, 28) and x_test.shape == (4, 28, 28)
    assert y_train.shape == (6,) and y_test.shape == (4,)
    assert y_train.dtype == np.int64


def test_load_mnist_torchvision_layout(mnist, tmp_path):
    write_fake_mnist(tmp_path / "MNIST" / "raw", n_train=3, n_test=2)
    x_train, _, x_test, _ = mnist.load_mnist(str(tmp_path))
    assert len(x_train) == 3 and len(x_test) == 2


def test_load_mnist_missing_files_gives_none(mnist, tmp_path):
    assert mnist.load_mnist(str(tmp_path)) is None
    write_fake_mnist(tmp_path, n_train=3, n_test=2)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    assert mnist.load_mnist(str(tmp_path)) is None


def test_load_mnist_label_count_mismatch(mnist, tmp_path):
    write_fake_mnist(tmp_path, n_train=3, n_test=2)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4, dtype=np.uint8))
    with pytest.raises(mnist.IDXError, match="3 images but 4 labels"):
        mnist.load_mnist(str(tmp_path))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([1, 10, 2], dtype=np.uint8))
    with pytest.raises(mnist.IDXError, match="labels must be digits"):
        mnist.load_mnist(str(tmp_path))


def test_onager_reporting_is_optional(mnist, monkeypatch):
    calls = []
    fake = types.ModuleType("onager")
    monkeypatch.setitem(sys.modules, "onager", fake)

    # not launched by onager: nothing is reported
    monkeypatch.delenv("ONAGER_LAUNCH_DIR", raising=False)
    fake.log_result = lambda **kw: calls.append(kw)
    mnist.report_to_onager(0.9, 0.3)
    assert calls == []

    monkeypatch.setenv("ONAGER_LAUNCH_DIR", "/nonexistent")
    mnist.report_to_onager(0.9, 0.3)
    assert calls == [{"accuracy": 0.9, "loss": 0.3}]

    # an onager without log_result must not break the run
    del fake.log_result
    mnist.report_to_onager(0.9, 0.3)


# ---------------------------------------------------------------------------
# (b), (c) running the program
# ---------------------------------------------------------------------------

def run_mnist(args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "ONAGER_LAUNCH_DIR"}
    # the models are tiny: one thread is as fast and copes better with a busy machine
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--no-cuda", "--log-interval", "0", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )


@pytest.fixture
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def parse_results(stdout):
    acc = re.findall(r"^Test accuracy: (\d\.\d{4})$", stdout, re.MULTILINE)
    loss = re.findall(r"^Test loss: (\d+\.\d{4})$", stdout, re.MULTILINE)
    assert len(acc) == 1 and len(loss) == 1, stdout
    return float(acc[0]), float(loss[0])


@needs_torch_and_sklearn
def test_smoke_digits_fallback(tmp_path):
    data_dir = tmp_path / "empty"
    data_dir.mkdir()
    proc = run_mnist(["--epochs", "1", "--seed", "0", "--data-dir", str(data_dir)],
                     cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    fallback_lines = [line for line in proc.stderr.splitlines() if FALLBACK_MESSAGE in line]
    assert len(fallback_lines) == 1, proc.stderr
    assert "Epoch 1:" in proc.stdout
    accuracy, loss = parse_results(proc.stdout)
    assert accuracy > 0.85, proc.stdout
    assert loss >= 0


@needs_torch_and_sklearn
def test_two_seeds_both_parse(mnist, tmp_path, monkeypatch, capsys, one_torch_thread):
    # in-process, so that torch is imported once for both runs
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ONAGER_LAUNCH_DIR", raising=False)
    data_dir = tmp_path / "empty"
    data_dir.mkdir()
    results = []
    for seed in (1, 2):
        assert mnist.main(["--no-cuda", "--log-interval", "0", "--epochs", "1",
                           "--seed", str(seed), "--data-dir", str(data_dir),
                           "--run-tag", f"digits/seed {seed}"]) == 0
        out = capsys.readouterr()
        assert FALLBACK_MESSAGE in out.err
        accuracy, loss = parse_results(out.out)
        assert 0.0 <= accuracy <= 1.0 and loss >= 0
        saved = json.loads((tmp_path / "runs" / f"digits_seed_{seed}" / "results.json").read_text())
        assert saved["seed"] == seed and round(saved["accuracy"], 4) == accuracy
        results.append((accuracy, loss))
    assert results[0] != results[1], "different seeds gave identical runs"


@needs_torch_and_sklearn
def test_idx_files_are_used_and_results_reported(mnist, tmp_path, monkeypatch, capsys,
                                                  one_torch_thread):
    data_dir = tmp_path / "data"
    write_fake_mnist(data_dir, n_train=64, n_test=32, gz=True)
    logged = []
    fake = types.ModuleType("onager")
    fake.log_result = lambda **kw: logged.append(kw)
    monkeypatch.setitem(sys.modules, "onager", fake)
    monkeypatch.setenv("ONAGER_LAUNCH_DIR", str(tmp_path))
    assert mnist.main(["--no-cuda", "--log-interval", "0", "--epochs", "1",
                       "--seed", "0", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr()
    assert FALLBACK_MESSAGE not in out.err
    assert "MNIST, 64 training and 32 test images of 28x28" in out.out
    accuracy, loss = parse_results(out.out)
    # one call per epoch: the test metrics, the training loss and the epoch as the step
    assert len(logged) == 1 and set(logged[0]) == {"accuracy", "loss", "train_loss", "step"}
    assert logged[0]["step"] == 1
    assert round(logged[0]["accuracy"], 4) == accuracy
    assert round(logged[0]["loss"], 4) == loss
