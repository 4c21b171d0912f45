"""Test-wide settings: quiet TensorFlow, CPU only, and the shared MNIST test digits."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402

SHARED_MNIST = os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets", "mnist"))


@pytest.fixture
def shared_mnist_dir() -> str:
    """The official 10k MNIST test files in ../shared (IDX, gzipped)."""
    if not os.path.exists(os.path.join(SHARED_MNIST, "t10k-images-idx3-ubyte.gz")):
        pytest.skip("../shared/datasets/mnist is not present")
    return SHARED_MNIST
