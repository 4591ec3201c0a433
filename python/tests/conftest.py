"""Shared helpers: the mmkit CLI, child Python processes, an unprivileged user."""

import os
import pathlib
import subprocess
import sys
import tempfile
import textwrap

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

# Set by the test script (and CI): tests that need the CLI or an
# unprivileged user fail instead of skipping.
NO_SKIP = os.environ.get("MMKIT_TEST_NO_SKIP") == "1"


def skip_or_fail(reason):
    if NO_SKIP:
        pytest.fail(reason + " (MMKIT_TEST_NO_SKIP=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def cli():
    """Path of the `mmkit` binary: $MMKIT_CLI, or target/release/mmkit."""
    path = pathlib.Path(os.environ.get("MMKIT_CLI") or REPO / "target" / "release" / "mmkit")
    if not path.is_file():
        skip_or_fail(f"no mmkit CLI at {path}; run `cargo build --release -p mmkit-cli`")
    return str(path)


def run_cli(cli, *args, input=None, check=True):
    """Runs `mmkit ARGS`, returning the completed process (text mode)."""
    proc = subprocess.run([cli, *map(str, args)], input=input, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"mmkit {' '.join(map(str, args))} failed ({proc.returncode}): {proc.stderr}")
    return proc


def python_child(code, *args, **popen_kwargs):
    """Starts `python -c CODE ARGS` (the same interpreter, so the same mmkit)."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], **popen_kwargs)


def run_python(code, *args, timeout=60, **kwargs):
    """Runs `python -c CODE ARGS` to completion, capturing its output."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


NOBODY = 65534


def as_nobody():
    """Code that makes a child (started as root, so that it can load the
    interpreter and mmkit) continue as an unprivileged user."""
    if os.geteuid() != 0:
        skip_or_fail("dropping to an unprivileged user needs root")
    return f"import os; os.setgid({NOBODY}); os.setuid({NOBODY})\n"


def permission_error_as_nobody(call, *args):
    """Runs `call` (a line of code that may use sys.argv and mmkit) as an
    unprivileged user and returns the PermissionError message it raised."""
    code = as_nobody() + f"""
import sys, mmkit
try:
    {call}
except PermissionError as e:
    print("PermissionError", e)
"""
    proc = run_python(code, *args)
    assert proc.stdout.startswith("PermissionError"), proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture
def public_dir():
    """A directory every user can traverse (pytest's tmp dirs are 0700)."""
    path = tempfile.mkdtemp(prefix="mmkit-py-")
    os.chmod(path, 0o755)
    yield pathlib.Path(path)
    subprocess.run(["rm", "-rf", path], check=False)
