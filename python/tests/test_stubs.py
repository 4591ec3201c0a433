"""The type stubs match the extension module (mypy's stubtest)."""

import importlib.util
import subprocess
import sys

from conftest import skip_or_fail


def test_stubs_match_the_runtime():
    if importlib.util.find_spec("mypy") is None:
        skip_or_fail("mypy is not installed (pip install ./python[test])")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "mmkit"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
