"""Handles inherited through fork(): usable where that is safe, never
dropped in the child where dropping would undo the parent's work."""

import gc
import os

import numpy as np
import pytest

import mmkit


def in_child(fn, meanwhile=None):
    """Runs `fn` in a forked child, and `meanwhile` in the parent; returns
    the child's exit status (0: `fn` returned)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn()
            code = 0
        finally:
            os._exit(code)
    if meanwhile:
        meanwhile()
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_a_queue_works_in_a_forked_child(tmp_path):
    q = mmkit.Queue(tmp_path / "q", create=True)
    q.append(b"parent before")
    reader = q.reader()

    def child():
        q.append(b"child")
        with pytest.raises(ValueError, match="before fork"):
            reader.next(0)
        del q_ref[:]
        gc.collect()

    q_ref = [q]
    assert in_child(child) == 0
    q.append(b"parent after")
    assert [r.payload for r in reader] == [b"parent before", b"child", b"parent after"]


def test_an_inherited_appendable_is_neither_used_nor_dropped(tmp_path):
    p = tmp_path / "log.npy"
    # Only `holder` refers to the appender, so the child can drop its copy.
    holder = [mmkit.Appendable(p, np.int32, (), create=True)]
    holder[0].append(np.arange(10))
    r, w = os.pipe()

    def child():
        with pytest.raises(ValueError, match="before fork"):
            holder[0].append([1])
        os.read(r, 1)  # the parent appended meanwhile
        holder.clear()  # the child's drop must not trim the parent's rows
        gc.collect()

    def parent():
        holder[0].append(np.arange(10, 20))
        os.write(w, b"x")

    assert in_child(child, parent) == 0
    np.testing.assert_array_equal(np.load(p), np.arange(20))
    holder[0].append([20])
    holder[0].close()
    np.testing.assert_array_equal(np.load(p), np.arange(21))


def test_arrays_and_shared_memory_work_in_a_forked_child(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, np.zeros(8, np.int64))
    a = mmkit.open_array(p, "r+")
    shm = mmkit.SharedMemory(create=True, size=64)
    try:

        def child():
            a[3] = 33
            shm.buf[0] = 7

        assert in_child(child) == 0
        assert np.load(p)[3] == 33 and a[3] == 33
        assert shm.buf[0] == 7
    finally:
        shm.close()
        shm.unlink()
