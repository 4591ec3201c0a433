"""SharedMemory against multiprocessing.shared_memory, other processes and the CLI."""

import gc
import json
import os
import pickle
from multiprocessing import resource_tracker, shared_memory

import numpy as np
import pytest

import mmkit
from conftest import permission_error_as_nobody, run_cli, run_python


def stdlib_attach(name):
    """Attaches with the standard library without letting its resource
    tracker unlink the segment at exit (cpython #82300)."""
    seg = shared_memory.SharedMemory(name)
    resource_tracker.unregister(seg._name, "shared_memory")  # noqa: SLF001
    return seg


@pytest.fixture
def seg():
    s = mmkit.SharedMemory(create=True, size=10_000)
    yield s
    try:
        s.close()
    except BufferError:
        pass
    try:
        s.unlink()
    except FileNotFoundError:
        pass


def test_stdlib_opens_ours_by_name_and_contents(seg):
    assert seg.name.startswith("psm_") and not seg.name.startswith("/")
    assert seg.size == 10_000 and len(seg.buf) == 10_000
    seg.buf[:5] = b"hello"
    other = stdlib_attach(seg.name)
    assert bytes(other.buf[:5]) == b"hello"
    other.buf[5:11] = b" world"
    assert bytes(seg.buf[:11]) == b"hello world"
    assert other.name == seg.name
    other.close()


def test_we_open_the_stdlibs_by_name_and_contents():
    std = shared_memory.SharedMemory(create=True, size=4096)
    try:
        for name in (std.name, "/" + std.name):
            std.buf[:3] = b"abc"
            ours = mmkit.SharedMemory(name)
            assert ours.name == std.name and ours.size == std.size
            assert bytes(ours.buf[:3]) == b"abc"
            ours.buf[0:1] = b"X"
            ours.close()
        assert bytes(std.buf[:3]) == b"Xbc"
    finally:
        std.close()
        std.unlink()


def test_numpy_on_buf_and_close_with_exports(seg):
    a = np.ndarray((100,), dtype=np.int64, buffer=seg.buf)
    a[:] = np.arange(100)
    b = np.frombuffer(seg, dtype=np.int64, count=100)  # the object's own buffer
    assert b[99] == 99
    with pytest.raises(BufferError):
        seg.close()
    del a
    gc.collect()
    with pytest.raises(BufferError):
        seg.close()
    del b
    gc.collect()
    seg.close()
    assert seg.buf is None
    seg.close()  # twice is fine
    with pytest.raises(BufferError):
        memoryview(seg)


def test_no_tracker_unlinks_behind_our_back(seg):
    # A child attaches, writes and exits without unlinking: the segment
    # must still be there (the stdlib's tracker would remove it on 3.8-3.12).
    proc = run_python(
        """
        import sys, mmkit
        s = mmkit.SharedMemory(sys.argv[1])
        s.buf[:4] = b"kept"
        """,
        seg.name,
    )
    assert proc.returncode == 0, proc.stderr
    assert os.path.exists(f"/dev/shm/{seg.name}")
    assert bytes(seg.buf[:4]) == b"kept"
    # And one created by a child that exits without unlinking stays too.
    proc = run_python(
        """
        import mmkit
        s = mmkit.SharedMemory(create=True, size=100)
        s.buf[:2] = b"ok"
        print(s.name)
        """
    )
    name = proc.stdout.strip()
    survivor = mmkit.SharedMemory(name)
    assert bytes(survivor.buf[:2]) == b"ok"
    survivor.close()
    survivor.unlink()


def test_pickles_by_name(seg):
    seg.buf[:2] = b"pk"
    again = pickle.loads(pickle.dumps(seg))
    assert again.name == seg.name and bytes(again.buf[:2]) == b"pk"
    again.close()


def test_context_manager_and_unlink():
    with mmkit.SharedMemory(create=True, size=64, track=True) as s:
        name = s.name
    assert s.buf is None
    s.unlink()
    with pytest.raises(FileNotFoundError):
        mmkit.SharedMemory(name)
    with pytest.raises(FileNotFoundError):
        s.unlink()


def test_bad_input(seg):
    with pytest.raises(FileExistsError) as e:
        mmkit.SharedMemory(seg.name, create=True, size=10)
    assert seg.name in str(e.value)
    with pytest.raises(FileNotFoundError) as e:
        mmkit.SharedMemory("mmkit-py-no-such-segment")
    assert "mmkit-py-no-such-segment" in str(e.value)
    with pytest.raises(ValueError):
        mmkit.SharedMemory(create=True, size=0)
    with pytest.raises(ValueError):
        mmkit.SharedMemory(create=True, size=-5)
    with pytest.raises(ValueError):
        mmkit.SharedMemory()
    with pytest.raises(ValueError, match="invalid name"):
        mmkit.SharedMemory("a/b", create=True, size=10)
    with pytest.raises(ValueError):
        mmkit.SharedMemory("", create=True, size=10)


def test_permission_denied(seg):
    assert seg.name in permission_error_as_nobody("mmkit.SharedMemory(sys.argv[1])", seg.name)


def test_cli_interop(cli):
    name = f"mmkit-py-cli-{os.getpid()}"
    run_cli(cli, "shm", "create", name, "--size", "8K")
    try:
        s = mmkit.SharedMemory(name)
        assert s.size == 8192
        s.close()
    finally:
        run_cli(cli, "shm", "rm", name)
    ours = mmkit.SharedMemory(create=True, size=12345)
    try:
        listed = json.loads(run_cli(cli, "shm", "list", "--json").stdout)
        entries = listed if isinstance(listed, list) else listed.get("segments", [])
        mine = [e for e in entries if e["name"] == ours.name]
        assert mine and mine[0]["size"] == 12345
    finally:
        ours.close()
        ours.unlink()
