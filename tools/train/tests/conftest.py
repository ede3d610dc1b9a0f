"""Shared fixtures of free-train's tests: paths, and skips when PyTorch, libfree or the
shared models are absent."""

import os
import pathlib
import sys

import pytest

TRAIN_DIR = pathlib.Path(__file__).resolve().parent.parent     # tools/train
SOURCE_ROOT = TRAIN_DIR.parent.parent

if str(TRAIN_DIR) not in sys.path:
    sys.path.insert(0, str(TRAIN_DIR))

try:
    import torch  # noqa: F401
    HAVE_TORCH = True
except ImportError:
    HAVE_TORCH = False

needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is not installed "
                                 "(Debian: python3-torch, run with /usr/bin/python3)")


def models_dir():
    env = os.environ.get("FREE_MODELS_DIR")
    return pathlib.Path(env) if env else SOURCE_ROOT.parent / "shared" / "models"


def model_file(rel):
    """A test model: the fixture committed in tests/data/ when there is one, else the
    file under FREE_MODELS_DIR (default ../shared/models); skips the test when absent."""
    path = SOURCE_ROOT / "tests" / "data" / rel
    if not path.exists():
        path = models_dir() / rel
    if not path.exists():
        pytest.skip(f"{path} not found (set FREE_MODELS_DIR)")
    return path


def libfree():
    """The binding's package with a loadable library, or a skip."""
    import binding
    try:
        lf = binding.import_libfree()
        lf.load_library()
    except (ImportError, OSError) as e:
        pytest.skip(f"libfree cannot be loaded: {e}")
    return lf
