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


# The default models are committed in models/ (the same bytes as the shared copies).
_COMMITTED = {"free-llama-22M/free-llama-22M.gguf": "models/free-llama-22M.gguf",
              "free-code-22M/free-code-22M.gguf": "models/free-code-22M.gguf"}


def model_path(rel):
    """Where the test model file rel ("stories260K/stories260K.gguf") is: the fixture
    committed in tests/data/ when there is one, else under FREE_MODELS_DIR (default
    ../shared/models), else the committed default models."""
    fixture = SOURCE_ROOT / "tests" / "data" / rel
    if fixture.exists():
        return fixture
    path = models_dir() / rel
    if not path.exists() and rel in _COMMITTED and (SOURCE_ROOT / _COMMITTED[rel]).exists():
        return SOURCE_ROOT / _COMMITTED[rel]
    return path


def model_file(rel):
    """Path of a test model file (see model_path); skips the test when it is absent."""
    path = model_path(rel)
    if not path.exists():
        pytest.skip(f"{path} not found (the shared test models: ../shared/models beside "
                    f"the source tree, or set FREE_MODELS_DIR)")
    return path


_ref_cache = {}


def ref_model(rel):
    """A NumPy RefModel for a model file, loaded once per session."""
    from numpy_ref import RefModel
    path = model_file(rel)
    if rel not in _ref_cache:
        _ref_cache[rel] = RefModel.load(path)
    return _ref_cache[rel]
