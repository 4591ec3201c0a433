"""Queue, Reader, Cursor: in one process, across processes, with the CLI."""

import json
import os
import random
import signal
import subprocess
import threading
import time

import pytest

import mmkit
from conftest import permission_error_as_nobody, python_child, run_cli


@pytest.fixture
def q(tmp_path):
    return mmkit.Queue(tmp_path / "q", create=True, segment_size=1 << 20)


def test_append_and_read(q):
    before = time.time_ns()
    assert q.append(b"hello") == 0
    assert q.append(bytearray(b"world")) == 1
    assert q.append(memoryview(b"!!")) == 2
    assert q.append_batch([b"a", b"bb", b"", bytearray(b"c")]) == [3, 4, 5, 6]
    assert q.first_index == 0 and q.end_index == 7
    records = list(q.reader())
    assert [r.payload for r in records] == [b"hello", b"world", b"!!", b"a", b"bb", b"", b"c"]
    assert [r.index for r in records] == list(range(7))
    assert all(before <= r.timestamp <= time.time_ns() for r in records)
    assert isinstance(records[0].payload, bytes) and len(records[0]) == 5


def test_iteration_stops_at_the_end_and_resumes(q):
    r = q.reader()
    assert list(r) == []
    q.append(b"1")
    assert [x.payload for x in r] == [b"1"]
    q.append(b"2")
    assert next(r).payload == b"2"
    with pytest.raises(StopIteration):
        next(r)
    assert r.position == 2


def test_next_waits_and_times_out(q):
    r = q.reader("end")
    t0 = time.monotonic()
    assert r.next(timeout=0.2) is None
    assert 0.15 <= time.monotonic() - t0 < 2
    assert r.next(timeout=0) is None
    q.append(b"x")
    assert r.next(timeout=0).payload == b"x"


def test_start_positions_and_seek(q):
    q.append_batch([b"%d" % i for i in range(10)])
    assert q.reader("beginning").next(0).payload == b"0"
    assert q.reader(7).next(0).payload == b"7"
    assert q.reader("end").next(0) is None
    r = q.reader()
    r.seek(4)
    assert r.next(0).index == 4


def test_next_releases_the_gil(q):
    r = q.reader("end")
    got = []
    waiter = threading.Thread(target=lambda: got.append(r.next(timeout=3.0)))
    waiter.start()
    # Pure-Python work: it only runs if the waiter released the GIL.
    spins, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < 0.3:
        spins += 1
    q.append(b"wake")
    waiter.join()
    assert spins > 1000
    assert got[0] is not None and got[0].payload == b"wake"
    assert time.monotonic() - t0 < 2.5, "the waiter woke on the append, not the timeout"


def test_ctrl_c_interrupts_a_wait(tmp_path):
    mmkit.Queue(tmp_path / "q", create=True)
    # The child raises KeyboardInterrupt on SIGINT even when it inherits
    # SIGINT ignored (a test run started in the background by a shell
    # without job control): Python installs its handler only over the
    # default disposition.
    code = """
        import signal, sys, mmkit
        signal.signal(signal.SIGINT, signal.default_int_handler)
        r = mmkit.Queue(sys.argv[1]).reader("end")
        print("waiting", flush=True)
        try:
            r.next()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
    """
    child = python_child(code, tmp_path / "q", stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "waiting\n"
    time.sleep(0.2)
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=10)
    assert out == "interrupted\n"


def test_cursor_commit_survives_reopen(tmp_path):
    path = tmp_path / "q"
    q = mmkit.Queue(path, create=True)
    q.append_batch([b"a", b"b", b"c"])
    c = q.cursor("billing")
    assert isinstance(c, mmkit.Reader) and c.name == "billing"
    assert next(c).payload == b"a" and next(c).payload == b"b"
    assert c.committed == 0
    c.commit()
    assert c.committed == 2
    q.close()
    again = mmkit.Queue(path).cursor("billing")
    assert again.position == 2 and again.next(0).payload == b"c"


def test_two_handles_in_one_process(tmp_path):
    a = mmkit.Queue(tmp_path / "q", create=True)
    b = mmkit.Queue(tmp_path / "q")
    a.append(b"from a")
    b.append(b"from b")
    assert [r.payload for r in b.reader()] == [b"from a", b"from b"]


def test_closed_queue(q):
    r = q.reader()
    q.append(b"x")
    with q:
        pass
    with pytest.raises(ValueError, match="closed"):
        q.append(b"y")
    assert r.next(0).payload == b"x", "readers outlive the handle"


def test_bad_input(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError) as e:
        mmkit.Queue(missing)
    assert str(missing) in str(e.value) and "Queue" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not an mmkit queue"):
        mmkit.Queue(tmp_path / "empty")
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(OSError):
        mmkit.Queue(tmp_path / "file", create=True)
    with pytest.raises(ValueError, match="segment_size"):
        mmkit.Queue(tmp_path / "q1", create=True, segment_size=-1)
    with pytest.raises(ValueError):
        mmkit.Queue(tmp_path / "q2", create=True, segment_size=1000)
    q = mmkit.Queue(tmp_path / "q", create=True, segment_size=1 << 20, max_message_size=100)
    assert q.max_message_size == 100 and q.segment_size == 1 << 20
    with pytest.raises(ValueError, match="exceeds") as e:
        q.append(b"x" * 101)
    assert "Queue.append" in str(e.value) and str(tmp_path / "q") in str(e.value)
    with pytest.raises(ValueError):
        q.append_batch([b"ok", b"x" * 101])
    assert q.end_index == 0, "a batch with a message too large appends nothing"
    with pytest.raises(TypeError):
        q.append("text")
    with pytest.raises(TypeError):
        q.append_batch([b"ok", 5])
    with pytest.raises(ValueError, match="start"):
        q.reader("middle")
    with pytest.raises(ValueError, match="index"):
        q.reader(-1)
    with pytest.raises(ValueError, match="name"):
        q.cursor("")
    with pytest.raises(ValueError, match="timeout"):
        q.reader().next(timeout=-1)


def test_cache_behind_drops_full_segments_unless_none(tmp_path):
    """Appends leave `cache_behind` bytes of full segments in the page
    cache (at least one segment); older ones are dropped. `None` keeps all."""
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True, text=True)
    if fs.stdout.strip() == "tmpfs":
        pytest.skip("tmpfs pages cannot be dropped")
    for cache_behind, dropped in [(0, True), (None, False)]:
        path = tmp_path / f"q-{cache_behind}"
        q = mmkit.Queue(path, create=True, segment_size=1 << 20, cache_behind=cache_behind)
        for _ in range(6):
            q.append_batch([b"x" * 1000] * 1000)
        first = path / ("0" * 20 + ".seg")
        deadline = time.monotonic() + 10
        while dropped and mmkit.resident(first).fraction > 0.1 and time.monotonic() < deadline:
            time.sleep(0.01)
        fraction = mmkit.resident(first).fraction
        assert (fraction <= 0.1) == dropped, (cache_behind, fraction)
        assert [r.payload for r in q.reader()] == [b"x" * 1000] * 6000
    with pytest.raises(ValueError, match="cache_behind"):
        mmkit.Queue(tmp_path / "q-bad", create=True, cache_behind=-1)


def test_corrupt_meta_raises_corrupt_error(tmp_path):
    path = tmp_path / "q"
    mmkit.Queue(path, create=True).close()
    with open(path / "meta", "r+b") as f:
        f.write(b"garbage!")
    with pytest.raises(mmkit.CorruptError) as e:
        mmkit.Queue(path)
    assert str(path) in str(e.value) and isinstance(e.value, mmkit.Error)


def test_permission_denied(public_dir):
    path = public_dir / "q"
    mmkit.Queue(path, create=True).close()
    os.chmod(path, 0o700)
    assert str(path) in permission_error_as_nobody("mmkit.Queue(sys.argv[1])", path)


# --- processes ----------------------------------------------------------

WRITER = """
import os, sys, time, mmkit
q = mmkit.Queue(sys.argv[1])
tag, stop_file = sys.argv[2], sys.argv[3]
out = os.fdopen(1, "w", buffering=1)

def payload(seq):
    return b"%s:%d:" % (tag.encode(), seq) + b"x" * (seq % 700)

seq = 0
while not os.path.exists(stop_file):
    if seq % 5 == 4:
        # Large batches, so that kills land inside them too.
        indices = q.append_batch([payload(seq + k) for k in range(400)])
        out.write("".join("%d %d\\n" % (ix, seq + k) for k, ix in enumerate(indices)))
        seq += 400
    else:
        out.write("%d %d\\n" % (q.append(payload(seq)), seq))
        seq += 1
    if seq % 64 == 0:
        time.sleep(0.0005)
"""


def expected_payload(tag, seq):
    return b"%s:%d:" % (tag.encode(), seq) + b"x" * (seq % 700)


class Acks:
    """Collects a writer's acknowledgements (`index seq` lines) in a thread."""

    def __init__(self, proc):
        self.proc, self.lines = proc, []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            if line.endswith("\n"):  # a kill can cut the last line short
                self.lines.append(tuple(map(int, line.split())))

    def wait_for(self, n, timeout=10):
        deadline = time.monotonic() + timeout
        while len(self.lines) < n and time.monotonic() < deadline:
            time.sleep(0.002)


def test_sigkill_mid_append_loses_no_acknowledged_message(tmp_path, cli):
    path, stop = tmp_path / "q", tmp_path / "stop"
    mmkit.Queue(path, create=True, segment_size=1 << 20).close()
    start = lambda tag: python_child(WRITER, path, tag, stop, stdout=subprocess.PIPE, text=True)
    survivor = Acks(start("A"))
    survivor.wait_for(1)
    rng = random.Random(1234)
    victims = {}
    for round_ in range(4):
        tag = f"B{round_}"
        victim = Acks(start(tag))
        victim.wait_for(rng.randrange(1, 3000))
        time.sleep(rng.random() * 0.02)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        victim.thread.join(timeout=10)
        victims[tag] = victim
    stop.touch()
    assert survivor.proc.wait(timeout=30) == 0, "the survivor was not blocked by the dead writers"
    survivor.thread.join(timeout=10)

    q = mmkit.Queue(path)
    stored = {}
    reader = q.reader()
    end = q.end_index
    t0 = time.monotonic()
    while reader.position < end:
        rec = reader.next(timeout=5)
        if rec is None:
            # The last claims before `end` may be a victim's, killed before
            # it committed them: the reader pads them and reaches the end
            # with no message to return.
            assert reader.position >= end, f"reader stuck at {reader.position} of {end}"
            break
        stored[rec.index] = rec.payload
    assert time.monotonic() - t0 < 10
    for tag, acks in [("A", survivor), *victims.items()]:
        assert acks.lines, f"writer {tag} acknowledged nothing"
        for index, seq in acks.lines:
            assert stored.get(index) == expected_payload(tag, seq), f"{tag} lost acknowledged #{seq} at {index}"
        seqs = [int(p.split(b":")[1]) for i, p in sorted(stored.items()) if p.startswith(tag.encode() + b":")]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), f"{tag} out of order or duplicated"
    # Appending and reading go on after the kills.
    index = q.append(b"after")
    assert reader.next(timeout=5).payload == b"after" and index >= end
    assert run_cli(cli, "queue", "check", path).returncode == 0


def test_two_python_processes_exchange_messages(tmp_path):
    path = tmp_path / "q"
    mmkit.Queue(path, create=True)
    consumer = python_child(
        """
        import sys, mmkit
        r = mmkit.Queue(sys.argv[1]).reader()
        got = []
        while len(got) < 1000:
            rec = r.next(timeout=10)
            if rec is None:
                sys.exit("timed out")
            got.append(rec.payload)
        assert got == [b"m%d" % i for i in range(1000)], got[:5]
        print("ok")
        """,
        path,
        stdout=subprocess.PIPE,
        text=True,
    )
    q = mmkit.Queue(path)
    for i in range(1000):
        q.append(b"m%d" % i)
    out, _ = consumer.communicate(timeout=30)
    assert consumer.returncode == 0 and out == "ok\n"


# --- the CLI on the same queue ------------------------------------------


def test_cli_reads_what_python_appends(tmp_path, cli):
    path = tmp_path / "q"
    q = mmkit.Queue(path, create=True)
    indices = [q.append(b"line %d" % i) for i in range(5)]
    lines = run_cli(cli, "queue", "tail", path, "--json").stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["index"] for r in records] == indices
    assert [r["payload"] for r in records] == ["line %d" % i for i in range(5)]
    ours = list(q.reader())
    assert [r["timestamp"] for r in records] == [r.timestamp for r in ours]


def test_python_reads_what_the_cli_appends(tmp_path, cli):
    path = tmp_path / "q"
    run_cli(cli, "queue", "create", path, "--segment-size", 1 << 20)
    q = mmkit.Queue(path)
    assert q.segment_size == 1 << 20
    q.append(b"python first")
    out = run_cli(cli, "queue", "append", path, "--print-index", input="one\ntwo\nthree\n").stdout
    assert [int(x) for x in out.split()] == [1, 2, 3]
    assert [r.payload for r in q.reader()] == [b"python first", b"one", b"two", b"three"]


def test_cursor_shared_with_the_cli(tmp_path, cli):
    path = tmp_path / "q"
    q = mmkit.Queue(path, create=True)
    q.append_batch([b"a", b"b", b"c"])
    out = run_cli(cli, "queue", "tail", path, "--cursor", "shared").stdout
    assert out == "a\nb\nc\n"
    c = q.cursor("shared")
    assert c.committed == 3 and c.next(0) is None
    q.append(b"d")
    assert c.next(0).payload == b"d"
    c.commit()
    assert run_cli(cli, "queue", "tail", path, "--cursor", "shared").stdout == ""
