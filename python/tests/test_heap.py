"""Heap, HeapMap, HeapVector: types, bad input, forked children, two
processes sharing a map with one SIGKILLed mid-insert, and the CLI."""

import json
import os
import pickle
import random
import signal
import subprocess
import threading
import time

import numpy as np
import pytest

import mmkit
from conftest import permission_error_as_nobody, python_child, run_cli, run_python


@pytest.fixture
def heap(tmp_path):
    h = mmkit.Heap(tmp_path / "h.heap", create=True, size=1 << 20)
    yield h
    h.close()


@pytest.fixture
def shm_name():
    name = f"mmkit-py-heap-{os.getpid()}-{random.randrange(1 << 30)}"
    yield name
    try:
        os.unlink(f"/dev/shm/{name}")
    except FileNotFoundError:
        pass


def test_map_of_bytes(heap):
    m = heap.map("m")
    assert (m.key_type, m.value_type, m.name) == ("bytes", "bytes", "m")
    m[b"a"] = b"1"
    m[bytearray(b"b")] = memoryview(b"2" * 1000)  # out of line
    assert m[b"a"] == b"1" and m.get(b"b") == b"2" * 1000 and m.get(b"zz") is None
    assert b"a" in m and b"zz" not in m and len(m) == 2
    assert m.insert(b"a", b"one") == b"1" and m.insert(b"c", b"") is None
    assert sorted(m.items()) == [(b"a", b"one"), (b"b", b"2" * 1000), (b"c", b"")]
    assert sorted(m) == sorted(m.keys()) == [b"a", b"b", b"c"]
    assert sorted(m.values()) == [b"", b"2" * 1000, b"one"]
    assert m.pop(b"c") == b"" and m.pop(b"c", None) is None
    del m[b"b"]
    with pytest.raises(KeyError):
        del m[b"b"]
    with pytest.raises(KeyError):
        m[b"b"]
    with pytest.raises(KeyError):
        m.pop(b"b")
    with pytest.raises(TypeError, match="bytes"):
        m["text"] = b"x"


def test_map_update_sets_pairs_in_order(heap):
    m = heap.map("u", key="uint64", value="uint64")
    m.update({k: k * 3 for k in range(20_000)})
    m.update([(5, 1), [5, 2], (20_000, 9)])  # a later pair wins; any two-item pair
    m.update(iter([]))
    assert len(m) == 20_001 and m[5] == 2 and m[19_999] == 59_997 and m[20_000] == 9
    s = heap.map("s", key=str, value=bytes)
    s.update([("short", b"x"), ("long", b"y" * 1000), ("short", b"z")])  # inline and out of line
    assert sorted(s.items()) == [("long", b"y" * 1000), ("short", b"z")]
    with pytest.raises(TypeError, match="pairs"):
        m.update([1, 2])
    with pytest.raises(TypeError, match="pairs"):
        m.update([(1, 2, 3)])
    with pytest.raises(TypeError, match="uint64"):
        m.update([(1, "one")])
    assert m[1] == 3, "a bad pair sets nothing"


@pytest.mark.parametrize(
    "key,value,k,v",
    [
        (str, str, "ключ", "значение"),
        (str, int, "hits", -(2**63)),
        ("uint64", "uint64", 2**64 - 1, 7),
        (int, float, -5, 0.5),
        (bytes, "float64", b"\x00", float("inf")),
    ],
)
def test_map_types(heap, key, value, k, v):
    m = heap.map("typed", key=key, value=value)
    m[k] = v
    assert m[k] == v and list(m.items()) == [(k, v)]
    # Opened again without types: those of the existing map.
    again = heap.map("typed")
    assert (again.key_type, again.value_type) == (m.key_type, m.value_type) and again[k] == v


def test_vector(heap):
    v = heap.vector("v", "int64")
    assert len(v) == 0 and v.dtype == np.dtype("int64") and v.name == "v"
    v.append(3)
    v.extend(np.arange(4))
    v.extend([10, 11])
    assert len(v) == 7 and v[0] == 3 and v[-1] == 11 and v[-7] == 3
    v[1] = 42
    assert v.tolist() == [3, 42, 1, 2, 3, 10, 11] and list(v) == v.tolist()
    arr = v.to_numpy()
    assert arr.dtype == np.int64 and arr.tolist() == v.tolist()
    arr[0] = 99  # a copy: the vector is unchanged
    assert v[0] == 3
    assert v.pop() == 11
    v.truncate(2)
    assert v.tolist() == [3, 42]
    v.clear()
    with pytest.raises(IndexError, match="empty"):
        v.pop()
    with pytest.raises(IndexError):
        v[0]
    with pytest.raises(IndexError):
        v[-1] = 5
    f = heap.vector("f32", np.float32)
    f.extend(np.linspace(0, 1, 5, dtype=np.float32))
    assert heap.vector("f32").to_numpy().dtype == np.float32
    assert heap.vector("new").dtype == np.float64  # the default for a new one
    u8 = heap.vector("u8", "uint8")
    with pytest.raises(OverflowError):
        u8.append(256)
    with pytest.raises(TypeError):
        heap.vector("u8", "int64")  # exists with another dtype
    with pytest.raises(TypeError):
        u8.extend(np.arange(3, dtype=np.int64))  # ndarrays must have the vector's dtype
    with pytest.raises(ValueError, match="complex128"):
        heap.vector("c", np.complex128)


def test_objects_stat_check_remove(heap):
    heap.map("m", key=str, value=str)["k"] = "v"
    heap.vector("v", "uint32").extend([1, 2, 3])
    names = {(o.name, o.kind) for o in heap.objects()}
    assert names == {("m", "map"), ("v", "vec")}
    s = heap.stat()
    assert s.header + s.used + s.free + s.overhead == s.size == heap.size
    assert s.max_size == heap.max_size and 0 <= s.fragmentation <= 1
    assert {o.name: o.len for o in s.objects} == {"m": 1, "v": 3}
    c = heap.check()
    assert c.clean and c.leaked_blocks == 0 and c.stat.size == s.size
    stale = heap.map("m")
    assert heap.remove("m") and not heap.remove("m")
    with pytest.raises(ValueError, match="removed"):
        stale["k"]
    assert [o.name for o in heap.objects()] == ["v"]


def test_file_and_shm_heaps_and_growth(tmp_path, shm_name):
    h = mmkit.Heap(shm=shm_name, create=True, size=256 << 10, max_size=64 << 20)
    assert h.shm == shm_name and h.path == f"/dev/shm/{shm_name}"
    m = h.map("big")
    for i in range(300):
        m[b"%d" % i] = bytes(4000)  # grows past the first size while in use
    assert h.size > 256 << 10 and len(m) == 300
    other = mmkit.Heap(shm=shm_name)
    assert len(other.map("big")) == 300
    again = pickle.loads(pickle.dumps(other))
    assert again.map("big")[b"7"] == bytes(4000)
    h.unlink()
    assert not os.path.exists(f"/dev/shm/{shm_name}")
    assert m[b"1"] == bytes(4000), "open handles keep working after unlink"
    with pytest.raises(FileNotFoundError):
        mmkit.Heap(shm=shm_name)


def test_a_full_heap_raises_memory_error(tmp_path):
    h = mmkit.Heap(tmp_path / "small.heap", create=True, size=256 << 10, max_size=1 << 20)
    m = h.map("m")
    with pytest.raises(MemoryError) as e:
        for i in range(1000):
            m[b"%d" % i] = bytes(16 << 10)
    assert str(tmp_path / "small.heap") in str(e.value)
    assert len(m) > 0 and h.check().clean, "the failed insert left the heap consistent"


def test_a_full_disk_is_an_error_and_the_heap_stays_usable(tmp_path):
    path = tmp_path / "full.heap"
    heap = mmkit.Heap(path, create=True, size=1 << 20)
    heap.map("m")[b"kept"] = b"yes"
    proc = run_python(
        """
        import errno, resource, signal, sys, mmkit
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal
        limit = int(sys.argv[2])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        m = mmkit.Heap(sys.argv[1]).map("m")
        try:
            for i in range(1000):
                m[b"%d" % i] = bytes(8000)
            print("no error")
        except OSError as e:
            print(errno.errorcode[e.errno], sys.argv[1] in str(e))
        """,
        path,
        (1 << 20) + (64 << 10),
    )
    assert proc.stdout.split() in (["EFBIG", "True"], ["ENOSPC", "True"]), proc.stdout + proc.stderr
    m = heap.map("m")
    assert m[b"kept"] == b"yes" and len(m) > 1
    m[b"after"] = bytes(8000)  # this process may grow it
    assert heap.check().clean


def test_bad_input(tmp_path, heap):
    missing = tmp_path / "missing.heap"
    with pytest.raises(FileNotFoundError) as e:
        mmkit.Heap(missing)
    assert str(missing) in str(e.value) and "Heap" in str(e.value)
    with pytest.raises(FileNotFoundError):
        mmkit.Heap(shm="mmkit-py-no-such-heap")
    with pytest.raises(IsADirectoryError):
        mmkit.Heap(tmp_path)
    junk = tmp_path / "junk"
    junk.write_bytes(b"x" * 100_000)
    with pytest.raises(mmkit.CorruptError, match="not an mmkit heap") as e:
        mmkit.Heap(junk)
    assert str(junk) in str(e.value)
    with pytest.raises(ValueError, match="path or shm"):
        mmkit.Heap()
    with pytest.raises(ValueError, match="path or shm"):
        mmkit.Heap(tmp_path / "a", shm="b")
    with pytest.raises(ValueError, match="size"):
        mmkit.Heap(tmp_path / "neg", create=True, size=-1)
    with pytest.raises(ValueError, match="exceeds"):
        mmkit.Heap(tmp_path / "max", create=True, size=2 << 20, max_size=1 << 20)
    with pytest.raises(ValueError, match="invalid object name"):
        heap.map("")
    with pytest.raises(ValueError, match="96 bytes"):
        heap.vector("x" * 100, "int8")
    with pytest.raises(ValueError, match="map keys and values"):
        heap.map("m", key="complex")
    heap.vector("v", "int8")
    with pytest.raises(TypeError, match="not a map"):
        heap.map("v")
    m = heap.map("m", key=str, value=int)
    with pytest.raises(TypeError, match="str"):
        m[b"bytes"] = 1
    with pytest.raises(TypeError, match="int64"):
        m["k"] = "text"
    with pytest.raises(TypeError):
        heap.map("m", value=bytes)
    heap.close()
    with pytest.raises(ValueError, match="closed"):
        heap.map("m")
    assert m.get("k") is None, "containers outlive the heap handle"


def test_corrupt_header_raises_corrupt_error(tmp_path):
    path = tmp_path / "c.heap"
    mmkit.Heap(path, create=True).close()
    with open(path, "r+b") as f:
        f.seek(8)
        f.write(b"\x63\x00\x00\x00")  # format version 99
    with pytest.raises(mmkit.CorruptError, match="not supported") as e:
        mmkit.Heap(path)
    assert str(path) in str(e.value)


def test_permission_denied(public_dir):
    path = public_dir / "p.heap"
    mmkit.Heap(path, create=True).close()
    assert str(path) in permission_error_as_nobody("mmkit.Heap(sys.argv[1])", path)


def test_works_in_a_forked_child(heap):
    m = heap.map("m", key=str, value=int)
    v = heap.vector("v", "int64")
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            m["child"] = os.getpid()
            v.append(1)
            code = 0
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert m["child"] == pid and v.tolist() == [1]


def test_writes_release_the_gil(heap):
    m = heap.map("m")
    stop = threading.Event()
    count = []

    def writer():
        n = 0
        while not stop.is_set():
            m[b"%d" % (n % 100)] = b"x" * 100
            n += 1
        count.append(n)

    t = threading.Thread(target=writer)
    t.start()
    spins, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < 0.2:
        spins += 1
    stop.set()
    t.join()
    assert spins > 1000 and count[0] > 0


# --- two processes, one SIGKILLed mid-insert -----------------------------------

INSERTER = """
import os, sys, mmkit
heap = mmkit.Heap(sys.argv[1])
m = heap.map("shared", key=str, value=bytes)
v = heap.vector("acks", "int64")
tag, n = sys.argv[2], int(sys.argv[3])
out = os.fdopen(1, "w", buffering=1)
i = 0
while n < 0 or i < n:
    # Values of every size: inline ones, and allocations of 100 B to 6 KB,
    # so kills land inside the allocator and the map's growth too.
    m["%s:%d" % (tag, i)] = bytes([i % 251]) * ((i * 97) % 6000)
    if i % 50 == 0:
        m.pop("%s:%d" % (tag, i - 25), None)
    v.append(i)
    out.write("%d\\n" % i)
    i += 1
"""


def value_of(i):
    return bytes([i % 251]) * ((i * 97) % 6000)


class Inserter:
    """An INSERTER child and the inserts it acknowledged (read in a thread)."""

    def __init__(self, path, tag):
        self.tag, self.seqs = tag, []
        self.proc = python_child(INSERTER, path, tag, -1, stdout=subprocess.PIPE, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            if line.endswith("\n"):  # a kill can cut the last line short
                self.seqs.append(int(line))

    def wait_for(self, n, timeout=15):
        deadline = time.monotonic() + timeout
        while len(self.seqs) < n and time.monotonic() < deadline:
            time.sleep(0.002)
        return len(self.seqs) >= n

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.thread.join(timeout=10)


def test_two_processes_share_a_map_and_survive_a_sigkill_mid_insert(tmp_path, cli):
    path = tmp_path / "shared.heap"
    heap = mmkit.Heap(path, create=True, size=1 << 20)
    heap.map("shared", key=str, value=bytes)
    heap.vector("acks", "int64")
    rng = random.Random(7)
    survivor = Inserter(path, "survivor")
    assert survivor.wait_for(1)
    writers = [survivor]
    for round_ in range(4):
        victim = Inserter(path, f"victim{round_}")
        writers.append(victim)
        victim.wait_for(rng.randrange(50, 600))
        victim.kill()
        # The survivor goes on at once, through any lock the victim died
        # holding (its half-done insert is rolled back by the next locker).
        assert survivor.wait_for(len(survivor.seqs) + 100, timeout=10), "the survivor stalled after a kill"
    survivor.kill()
    m = heap.map("shared")
    for w in writers:
        assert w.seqs, f"{w.tag} acknowledged nothing"
        last = max(w.seqs)
        for i in w.seqs:
            if i % 50 == 25 and i + 25 <= last + 1:
                continue  # removed by the writer itself (or maybe, just before its kill)
            assert m.get(f"{w.tag}:{i}") == value_of(i), f"{w.tag} lost acknowledged insert {i}"
    # A killed insert may leak its own allocation, and nothing else.
    report = heap.check(repair=True)
    assert heap.check().clean, report.repairs
    assert run_cli(cli, "heap", "check", path).returncode == 0


# --- the CLI on the same heap -----------------------------------------------------


def test_cli_interop(tmp_path, cli, shm_name):
    path = tmp_path / "cli.heap"
    run_cli(cli, "heap", "create", path, "--size", "2M")
    heap = mmkit.Heap(path)
    assert heap.size == 2 << 20
    heap.map("sessions", key=str, value=bytes)["ada"] = b"token"
    heap.vector("samples", "float64").extend([1.0, 2.0])
    listed = json.loads(run_cli(cli, "heap", "ls", path, "--json").stdout)
    assert sorted((o["name"], o["kind"]) for o in listed) == [("samples", "vec"), ("sessions", "map")]
    stat = json.loads(run_cli(cli, "heap", "stat", path, "--json").stdout)
    assert stat["size"] == heap.size
    assert run_cli(cli, "heap", "check", path).returncode == 0
    run_cli(cli, "heap", "create", "--shm", shm_name, "--size", "1M")
    shm_heap = mmkit.Heap(shm=shm_name)
    shm_heap.map("m")[b"k"] = b"v"
    ls = run_cli(cli, "heap", "ls", "--shm", shm_name).stdout
    assert ls.split()[:2] == ["m", "map"]
