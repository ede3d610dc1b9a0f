"""Shared fixtures: where the model files are, and cached NumPy reference models."""

import os
import pathlib
import sys

import pytest

TESTS_DIR = pathlib.Path(__file__).resolve().parent
PACKAGE_ROOT = TESTS_DIR.parent            # bindings/python
SOURCE_ROOT = PACKAGE_ROOT.parent.parent   # the libfree source tree

# The tests import the reference modules beside them and the package under test.
for p in (str(TESTS_DIR), str(PACKAGE_ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)


def models_dir():
    env = os.environ.get("FREE_MODELS_DIR")
    if env:
        return pathlib.Path(env)
    return SOURCE_ROOT.parent / "shared" / "models"


def model_file(rel):
    """Path of a file under FREE_MODELS_DIR; skips the test when it is absent."""
    path = models_dir() / rel
    if not path.exists():
        pytest.skip(f"{path} not found (set FREE_MODELS_DIR)")
    return path


_ref_cache = {}


def ref_model(rel):
    """A NumPy RefModel for a model file, loaded once per session."""
    from numpy_ref import RefModel
    path = model_file(rel)
    if rel not in _ref_cache:
        _ref_cache[rel] = RefModel.load(path)
    return _ref_cache[rel]
