"""The code stays in small modules: none in pipeline/, stages/ or moe_train/ over 600 lines."""

from __future__ import annotations

import pytest
from conftest import ROOT

MAX_LINES = 600


@pytest.mark.parametrize("package", ["pipeline", "stages", "moe_train"])
def test_no_module_over_the_line_limit(package):
    sizes = {
        path.relative_to(ROOT).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in (ROOT / package).rglob("*.py")
    }
    assert sizes, f"no modules found under {package}/"
    too_long = {path: n for path, n in sizes.items() if n > MAX_LINES}
    assert not too_long, f"split these by concern (limit {MAX_LINES} lines): {too_long}"
