"""open_array, create_array and Appendable against real numpy."""

import gc
import os
import signal
import struct
import subprocess
import time

import numpy as np
import pytest

import mmkit
from conftest import permission_error_as_nobody, python_child, run_python

ALL_DTYPES = ["?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"]


def sample(dtype, shape=(5, 3)):
    n = int(np.prod(shape))
    return (np.arange(n) % 7).astype(dtype).reshape(shape)


# --- open_array ---------------------------------------------------------


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_open_array_every_dtype(tmp_path, dtype):
    p = tmp_path / "a.npy"
    expected = sample(dtype)
    np.save(p, expected)
    a = mmkit.open_array(p)
    assert a.dtype == expected.dtype and a.shape == expected.shape
    np.testing.assert_array_equal(a, expected)


def test_r_plus_write_is_seen_by_numpy_load(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, np.zeros((100, 4), np.float32))
    a = mmkit.open_array(p, "r+")
    assert a.flags.writeable
    a[42, 3] = 7.25
    a[99] = [1, 2, 3, 4]
    # No flush: numpy's read() goes through the same page cache.
    loaded = np.load(p)
    assert loaded[42, 3] == 7.25
    np.testing.assert_array_equal(loaded[99], [1, 2, 3, 4])


def test_two_views_share_the_page_cache(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, np.zeros(1000, np.int64))
    writer = mmkit.open_array(p, "r+")
    reader = mmkit.open_array(p, "r")
    writer[500] = 12345
    assert reader[500] == 12345, "zero copy: both views see the same page"


def test_r_is_not_writeable_and_cannot_be_made_so(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, np.arange(10))
    a = mmkit.open_array(p)
    assert not a.flags.writeable
    with pytest.raises(ValueError):
        a[0] = 1
    with pytest.raises(ValueError):
        a.flags.writeable = True


def test_c_mode_writes_stay_private(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, np.arange(10, dtype=np.int32))
    a = mmkit.open_array(p, "c")
    a[0] = 99
    assert a[0] == 99
    assert np.load(p)[0] == 0
    assert mmkit.open_array(p)[0] == 0


def test_base_keeps_the_mapping_alive(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, np.arange(100_000, dtype=np.float64))
    a = mmkit.open_array(p)
    assert isinstance(a.base, mmkit.MappedArray)
    assert a.base.path == str(p) and a.base.mode == "r"
    tail = a[-10:]
    assert tail.base is a, "a view keeps its parent, and so the mapping, alive"
    del a
    gc.collect()
    np.testing.assert_array_equal(tail, np.arange(99_990, 100_000))


def test_fortran_zero_d_empty_and_big_endian(tmp_path):
    f = np.asfortranarray(sample("f8", (4, 6)))
    np.save(tmp_path / "f.npy", f)
    a = mmkit.open_array(tmp_path / "f.npy")
    assert a.flags.f_contiguous and not a.flags.c_contiguous
    np.testing.assert_array_equal(a, f)

    np.save(tmp_path / "z.npy", np.float64(3.5))
    z = mmkit.open_array(tmp_path / "z.npy")
    assert z.shape == () and z[()] == 3.5

    np.save(tmp_path / "e.npy", np.zeros((0, 3), np.int16))
    assert mmkit.open_array(tmp_path / "e.npy").shape == (0, 3)

    be = sample(">i4", (3, 3))
    np.save(tmp_path / "b.npy", be)
    b = mmkit.open_array(tmp_path / "b.npy", "r+")
    assert b.dtype == np.dtype(">i4")
    np.testing.assert_array_equal(b, be)
    b[0, 0] = 0x01020304
    assert np.load(tmp_path / "b.npy")[0, 0] == 0x01020304


def write_npy(path, descr, shape, data_offset, data):
    """A version 1.0 .npy file whose data starts at `data_offset`."""
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    hlen = data_offset - 10
    body = header.ljust(hlen - 1) + "\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", hlen) + body.encode() + data)


def test_unaligned_data_is_mapped_too(tmp_path):
    p = tmp_path / "u.npy"
    values = np.arange(8, dtype="<f8")
    write_npy(p, "<f8", (8,), 75, values.tobytes())
    np.testing.assert_array_equal(np.load(p), values)
    a = mmkit.open_array(p)
    assert not a.flags.aligned
    np.testing.assert_array_equal(a, values)


def test_truncated_under_the_mapping_reads_zeros_instead_of_sigbus(tmp_path):
    p = tmp_path / "big.npy"
    np.save(p, np.ones(1 << 20, np.float64))
    code = """
        import os, sys, numpy as np, mmkit
        path, how = sys.argv[1], sys.argv[2]
        a = mmkit.open_array(path) if how == "mmkit" else np.load(path, mmap_mode="r")
        assert a.sum() == 1 << 20
        os.truncate(path, 4096)
        print(float(a.sum()))
    """
    proc = run_python(code, p, "mmkit")
    assert proc.returncode == 0, proc.stderr
    # The pages past the new end read as zeros (the guard maps zero pages
    # over the poisoned range); at most the first page's 496 values remain.
    assert float(proc.stdout) <= 496.0
    np.save(p, np.ones(1 << 20, np.float64))
    proc = run_python(code, p, "numpy")
    assert proc.returncode == -signal.SIGBUS, "numpy.memmap dies here; mmkit does not"


# --- create_array -------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, "int16", np.dtype("c16"), "?", "<u8", "float16"])
def test_create_array_is_w_plus(tmp_path, dtype):
    p = tmp_path / "c.npy"
    a = mmkit.create_array(p, dtype, (6, 2))
    assert a.dtype == np.dtype(dtype) and a.shape == (6, 2) and a.flags.writeable
    assert not a.any()
    a[3] = 1
    loaded = np.load(p, mmap_mode="r")
    assert loaded.dtype == np.dtype(dtype) and loaded[3].all() and not loaded[2].any()


def test_create_array_fortran_and_int_shape(tmp_path):
    a = mmkit.create_array(tmp_path / "f.npy", "f4", (3, 4), order="F")
    a[:, 1] = 5
    loaded = np.load(tmp_path / "f.npy")
    assert np.isfortran(loaded) and (loaded[:, 1] == 5).all()
    b = mmkit.create_array(tmp_path / "v.npy", "u1", 10)
    assert b.shape == (10,)


# --- bad input ----------------------------------------------------------


def test_open_array_errors(tmp_path):
    missing = tmp_path / "missing.npy"
    with pytest.raises(FileNotFoundError) as e:
        mmkit.open_array(missing)
    assert str(missing) in str(e.value) and "open_array" in str(e.value)

    with pytest.raises(ValueError, match="mode"):
        np.save(tmp_path / "ok.npy", np.arange(3))
        mmkit.open_array(tmp_path / "ok.npy", "x")
    with pytest.raises(ValueError, match="create_array"):
        mmkit.open_array(tmp_path / "ok.npy", "w+")

    with pytest.raises(IsADirectoryError):
        mmkit.open_array(tmp_path)

    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"this is not numpy" * 10)
    with pytest.raises(mmkit.CorruptError) as e:
        mmkit.open_array(garbage)
    assert isinstance(e.value, mmkit.Error) and str(garbage) in str(e.value)

    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    with pytest.raises(mmkit.CorruptError):
        mmkit.open_array(empty)

    short = tmp_path / "short.npy"
    np.save(short, np.zeros(1000))
    os.truncate(short, 500)
    with pytest.raises(mmkit.CorruptError, match="truncated"):
        mmkit.open_array(short)

    objects = tmp_path / "obj.npy"
    np.save(objects, np.array([{}, []], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="object"):
        mmkit.open_array(objects)


def test_create_array_errors(tmp_path):
    p = tmp_path / "c.npy"
    with pytest.raises(ValueError, match="byte order"):
        mmkit.create_array(p, ">f4", (2,))
    with pytest.raises(ValueError, match="negative"):
        mmkit.create_array(p, "f4", (2, -1))
    with pytest.raises(ValueError):
        mmkit.create_array(p, "U10", (2,))
    with pytest.raises(TypeError):
        mmkit.create_array(p, "f4", "big")
    with pytest.raises(ValueError, match="order"):
        mmkit.create_array(p, "f4", 3, order="K")
    with pytest.raises(FileNotFoundError):
        mmkit.create_array(tmp_path / "no" / "such" / "dir.npy", "f4", 3)


def test_permission_denied(public_dir):
    p = public_dir / "private.npy"
    np.save(p, np.arange(4))
    os.chmod(p, 0o600)
    assert str(p) in permission_error_as_nobody("mmkit.open_array(sys.argv[1])", p)


# --- Appendable ---------------------------------------------------------


def test_appends_are_seen_by_numpy(tmp_path):
    p = tmp_path / "log.npy"
    log = mmkit.Appendable(p, np.float32, (3,), create=True)
    assert np.load(p).shape == (0, 3)
    assert log.append(np.ones((4, 3), np.float32)) == 4
    assert np.load(p).shape == (4, 3), "numpy sees rows as soon as append returns"
    assert log.append([7, 8, 9]) == 5
    assert log.append(np.zeros((0, 3))) == 5
    on_disk = np.load(p, mmap_mode="r")
    np.testing.assert_array_equal(on_disk[4], [7, 8, 9])
    assert len(log) == log.rows == 5 and log.row_shape == (3,) and log.dtype == np.float32
    log.close()
    assert log.closed
    np.testing.assert_array_equal(np.load(p)[:4], np.ones((4, 3)))


def test_array_is_zero_copy_and_close_refuses_while_it_lives(tmp_path):
    p = tmp_path / "log.npy"
    with mmkit.Appendable(p, "i8", (), create=True) as log:
        log.append(np.arange(10))
        view = log.array()
        assert view.shape == (10,) and not view.flags.writeable
        assert isinstance(view.base, mmkit.AppendableView)
        log.append(np.arange(10, 20))
        np.testing.assert_array_equal(view, np.arange(10))
        np.testing.assert_array_equal(log.array(), np.arange(20))
        part = view[5:]
        del view
        gc.collect()
        with pytest.raises(BufferError):
            log.close()
        assert part.sum() == sum(range(5, 10))
        del part
        gc.collect()
    assert log.closed
    with pytest.raises(ValueError, match="closed"):
        log.append([1])
    log.close()  # twice is fine


def test_appendable_reopens_numpy_files(tmp_path):
    p = tmp_path / "np.npy"
    np.save(p, np.arange(6, dtype=np.int32).reshape(3, 2))
    log = mmkit.Appendable(p)
    assert log.dtype == np.int32 and log.row_shape == (2,) and log.rows == 3
    log.append([[6, 7]])
    log.close()
    np.testing.assert_array_equal(np.load(p), np.arange(8).reshape(4, 2))
    again = mmkit.Appendable(p, "int32", (2,), create=True)
    assert again.rows == 4, "create=True opens an existing file"
    again.close()


def test_appendable_errors(tmp_path):
    p = tmp_path / "log.npy"
    with pytest.raises(ValueError, match="dtype and row_shape"):
        mmkit.Appendable(p, create=True)
    with pytest.raises(FileNotFoundError):
        mmkit.Appendable(p, "f4", (2,))
    log = mmkit.Appendable(p, "f4", (2,), create=True)
    with pytest.raises(ValueError, match="shape"):
        log.append(np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="cannot append"):
        log.append(np.array([1 + 2j, 3j]))
    with pytest.raises(BlockingIOError):
        mmkit.Appendable(p, "f4", (2,))  # one appender at a time
    log.close()
    with pytest.raises(ValueError, match="dtype mismatch"):
        mmkit.Appendable(p, "f8", (2,))
    with pytest.raises(ValueError, match="rows are shaped"):
        mmkit.Appendable(p, "f4", (3,))


def test_appender_killed_mid_append_leaves_every_acknowledged_row(tmp_path):
    p = tmp_path / "log.npy"
    code = """
        import sys, numpy as np, mmkit
        log = mmkit.Appendable(sys.argv[1], np.int64, (16,), create=True)
        n = 0
        while True:
            k = 1 + n % 5000
            rows = (np.arange(n, n + k, dtype=np.int64)[:, None] * np.ones(16, np.int64))
            n = log.append(rows)
            print(n, flush=True)
    """
    child = python_child(code, p, stdout=subprocess.PIPE, text=True)
    acked = 0
    deadline = time.monotonic() + 10
    while acked < 20_000 and time.monotonic() < deadline:
        acked = int(child.stdout.readline())
    child.send_signal(signal.SIGKILL)
    child.wait()
    loaded = np.load(p)
    assert loaded.shape[0] >= acked and loaded.shape[1] == 16
    np.testing.assert_array_equal(loaded[:, 0], np.arange(loaded.shape[0]))
    assert (loaded == loaded[:, :1]).all(), "every row is whole"
