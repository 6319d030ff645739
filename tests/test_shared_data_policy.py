"""Tests on real data (../shared/data) skip where the data is absent, but fail in CI, where it is provisioned."""

from __future__ import annotations

import conftest
import pytest


@pytest.mark.parametrize("ci", ["true", "TRUE"])
def test_missing_shared_data_fails_in_ci(monkeypatch, tmp_path, ci):
    monkeypatch.setattr(conftest, "SHARED_DATA", tmp_path / "absent")
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        conftest.require_shared_data()


@pytest.mark.parametrize("ci", [None, "", "false"])
def test_missing_shared_data_skips_outside_ci(monkeypatch, tmp_path, ci):
    monkeypatch.setattr(conftest, "SHARED_DATA", tmp_path / "absent")
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="shared data not found"):
        conftest.require_shared_data()


def test_present_shared_data_is_returned(monkeypatch, tmp_path):
    monkeypatch.setattr(conftest, "SHARED_DATA", tmp_path)
    monkeypatch.setenv("CI", "true")
    assert conftest.require_shared_data() == tmp_path
