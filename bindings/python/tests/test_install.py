"""The README's install route: a venv with the system's site packages, the package
installed offline with pip, and the library found from there (issue 15, item 4)."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

PACKAGE_ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_venv_install(tmp_path):
    if not sys.executable.startswith("/usr/bin/python3"):
        pytest.skip("the install route is documented for Debian's /usr/bin/python3")
    try:
        import ensurepip  # noqa: F401  (python3-venv)
    except ImportError:
        pytest.skip("python3-venv is not installed")
    lib = os.environ.get("LIBFREE_PATH")
    if not lib or not os.path.exists(lib):
        pytest.skip("LIBFREE_PATH does not name a built library")
    src = tmp_path / "src"
    shutil.copytree(PACKAGE_ROOT, src, ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                                      "__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, capture_output=True)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-build-isolation",
                          "--no-index", "--quiet", str(src)], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FREE_BUILD_DIR")}
    probe = "import libfree; print(libfree.__file__); print(libfree.version())"
    out = subprocess.run([str(venv / "bin" / "python"), "-c", probe], env=env, cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0].startswith(str(venv))
    assert out[1] == libfree_version()


def libfree_version():
    import libfree
    return libfree.version()
