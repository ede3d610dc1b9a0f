"""Robustness of the binding's inputs (issue 14)."""

import pytest

import libfree
from test_binding import STORIES, lib, stories  # noqa: F401 (fixtures)


def test_calibration_with_a_nul_byte_is_refused(stories):
    with stories.context(exit_mode="free", adaptive=True) as ctx:
        good = ctx.export_calibration()
    cut = good.replace("rule", "\0rule", 1)
    with pytest.raises(ValueError) as e:
        stories.context(exit_mode="free", adaptive=True, calibration=cut)
    assert "NUL byte at offset" in str(e.value)


def test_numeric_status_has_its_class(lib):
    assert libfree.Status.ERR_NUMERIC == -13
    assert issubclass(libfree.NumericError, ArithmeticError)
