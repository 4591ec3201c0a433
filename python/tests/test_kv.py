"""Kv and Db: typed values, tables, transactions, iteration, watches, bad
input, forked children, two processes with a SIGKILLed writer, and the CLI."""

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
def db(tmp_path):
    d = mmkit.Db(tmp_path / "app.kv", create=True)
    yield d
    d.close()


# --- Kv: the MMKV use case ------------------------------------------------


def test_kv_typed_values(tmp_path):
    kv = mmkit.Kv(tmp_path / "settings.kv")
    assert kv.durability == "eventual" and len(kv) == 0
    kv.set("volume", 7)
    kv.set("ratio", 0.25)
    kv.set("muted", True)
    kv.set("name", "ada")
    kv.set("blob", b"\x00\x01")
    kv["big"] = -(2**63)
    kv.set("np", np.int32(5))
    assert kv.get_int("volume") == 7 and kv.get_int("big") == -(2**63) and kv.get_int("np") == 5
    assert kv.get_float("ratio") == 0.25 and kv.get_bool("muted") is True
    assert kv.get_str("name") == "ada" and kv.get_bytes("blob") == b"\x00\x01"
    # Stored as MMKV stores them; kv[key] gives the raw bytes.
    assert kv["volume"] == (7).to_bytes(8, "little") and kv[b"name"] == b"ada"
    assert kv.get_int("missing") is None and kv.get_str("missing", "dflt") == "dflt"
    assert "volume" in kv and "missing" not in kv and len(kv) == 7
    assert list(kv) == sorted(["volume", "ratio", "muted", "name", "blob", "big", "np"])
    assert kv.remove("name") is True and kv.remove("name") is False
    del kv["blob"]
    with pytest.raises(KeyError):
        del kv["blob"]
    with pytest.raises(KeyError):
        kv["blob"]


def test_kv_persists_and_is_a_db(tmp_path):
    path = tmp_path / "settings.kv"
    with mmkit.Kv(path) as kv:
        kv.set("a", 1)
        kv.set("b", "two")
    again = mmkit.Kv(path)
    assert again.get_int("a") == 1 and again.get_str("b") == "two"
    # The same file as a Db: the default table holds the keys.
    with mmkit.Db(path).read() as r:
        assert dict(r.table().items()) == {b"a": (1).to_bytes(8, "little"), b"b": b"two"}
    assert pickle.loads(pickle.dumps(again)).get_int("a") == 1


def test_kv_keys_that_are_not_utf8_round_trip(tmp_path):
    kv = mmkit.Kv(tmp_path / "k.kv")
    kv.set(b"\xff\xferaw", b"x")
    (key,) = list(kv)
    assert key == os.fsdecode(b"\xff\xferaw")
    assert kv[key] == b"x" and key in kv


def test_kv_bad_input(tmp_path):
    kv = mmkit.Kv(tmp_path / "k.kv")
    kv.set("s", "text")
    with pytest.raises(ValueError, match="Kv.get_int") as e:
        kv.get_int("s")
    assert str(tmp_path) in str(e.value)
    with pytest.raises(ValueError):
        kv.get_bool("s")
    kv.set("bad", b"\xff")
    with pytest.raises(ValueError):
        kv.get_str("bad")
    with pytest.raises(TypeError, match="value"):
        kv.set("k", None)
    with pytest.raises(TypeError, match="key"):
        kv.set(5, 1)
    with pytest.raises(OverflowError):
        kv.set("k", 2**64)
    with pytest.raises(ValueError, match="too long"):
        kv.set("k" * 10_000, 1)
    with pytest.raises(ValueError, match="durability"):
        mmkit.Kv(tmp_path / "k2.kv", durability="sometimes")
    kv.close()
    with pytest.raises(ValueError, match="closed"):
        kv.set("k", 1)


# --- Db: tables, transactions ---------------------------------------------


def test_tables_and_transactions(db):
    with db.write() as w:
        users = w.table("users")
        users[b"ada"] = b"lovelace"
        users.put("alan", "turing")
        users[bytearray(b"grace")] = memoryview(b"hopper")
        w.table("empty")
        assert len(users) == 3 and users[b"alan"] == b"turing"
        assert w.tables() == ["empty", "users"]
        txnid = w.txnid
    assert w.closed and db.last_commit == txnid
    with db.read() as r:
        assert r.txnid == txnid and r.tables() == ["empty", "users"]
        users = r.table("users")
        assert users.get(b"ada") == b"lovelace" and users.get(b"bob") is None
        assert users.get(b"bob", b"-") == b"-"
        assert b"grace" in users and "grace" in users and b"bob" not in users
        assert users.first() == (b"ada", b"lovelace") and users.last() == (b"grace", b"hopper")
        assert list(users) == [b"ada", b"alan", b"grace"]
        assert list(users.values()) == [b"lovelace", b"turing", b"hopper"]
        assert r.table("empty").first() is None and len(r.table()) == 0
        with pytest.raises(KeyError, match="nope"):
            r.table("nope")
    with db.write() as w:
        assert w.drop_table("empty") and not w.drop_table("empty")
        users = w.table("users")
        assert users.delete(b"alan") and not users.delete(b"alan")
        del users[b"grace"]
        with pytest.raises(KeyError):
            del users[b"grace"]
    with db.read() as r:
        assert r.tables() == ["users"] and list(r.table("users").items()) == [(b"ada", b"lovelace")]


def test_range_prefix_reverse_and_big_iterations(db):
    keys = [b"k%05d" % i for i in range(3000)]
    with db.write() as w:
        t = w.table("t")
        for k in keys:
            t.append(k, k[::-1])  # sorted bulk load
        with pytest.raises(ValueError, match="increasing"):
            t.append(b"a", b"")
    with db.read() as r:
        t = r.table("t")
        assert len(t) == 3000
        assert [k for k, _ in t.items()] == keys
        assert [k for k, _ in t.range(reverse=True)] == keys[::-1]
        assert list(t.range(b"k00010", b"k00013")) == [(k, k[::-1]) for k in keys[10:13]]
        assert [k for k, _ in t.range(b"k00010", b"k00013", reverse=True)] == keys[12:9:-1]
        assert [k for k, _ in t.range(start=b"k02998")] == keys[2998:]
        assert [k for k, _ in t.range(end=b"k00002")] == keys[:2]
        assert [k for k, _ in t.prefix(b"k0001")] == keys[10:20]
        assert [k for k, _ in t.prefix(b"k0001", reverse=True)] == keys[19:9:-1]
        assert list(t.prefix(b"z")) == [] and list(t.range(b"b", b"a")) == []
        # Stopping early copies only the first chunk.
        it = t.items()
        assert next(it) == (keys[0], keys[0][::-1])
    with db.write() as w:
        t = w.table("t")
        assert t.delete_range(b"k00100", b"k02000") == 1900
        # A write transaction's iterator sees its own writes past the chunk
        # it copied.
        it = iter(t)
        assert next(it) == keys[0]
        t.put(b"k99999", b"new")
        rest = list(it)
        assert rest[-1] == b"k99999" and len(rest) == 3000 - 1900
        t.clear()
        assert len(t) == 0 and list(t) == []


def test_snapshot_isolation_and_copies(db):
    with db.write() as w:
        w.table()[b"x"] = b"1"
    r = db.read()
    old = r.table().get(b"x")
    with db.write() as w:
        w.table()[b"x"] = b"2"
        w.table()[b"y"] = b"new"
    t = r.table()
    assert t[b"x"] == b"1" and b"y" not in t and len(t) == 1
    with db.read() as fresh:
        assert fresh.table()[b"x"] == b"2"
    r.close()
    assert r.closed and isinstance(old, bytes) and old == b"1"  # a copy, not a view
    with pytest.raises(ValueError, match="closed"):
        t.get(b"x")
    with pytest.raises(ValueError, match="closed"):
        list(t.items())


def test_write_commits_on_exit_and_aborts_on_exception(db):
    with pytest.raises(ZeroDivisionError):
        with db.write() as w:
            w.table("t")[b"k"] = b"v"
            1 / 0
    with db.read() as r:
        assert r.tables() == []
    w = db.write()
    w.table("t")[b"k"] = b"v"
    w.abort()
    w.abort()  # twice is fine
    with pytest.raises(ValueError, match="closed"):
        w.commit()
    with pytest.raises(ValueError, match="closed"):
        w.table("t")
    w = db.write(durability="eventual")
    w.table("t")[b"k"] = b"v"
    assert w.commit() == db.last_commit
    db.sync()
    with db.read() as r:
        assert r.table("t")[b"k"] == b"v"
    # Dropping an unfinished transaction aborts it.
    w = db.write()
    w.table("t")[b"gone"] = b"1"
    del w
    with db.read() as r:
        assert b"gone" not in r.table("t")


def test_one_write_transaction_per_thread(db):
    w = db.write()
    with pytest.raises(RuntimeError, match="already has a write transaction"):
        db.write()
    errors = []

    def other_thread():
        try:
            w.table()[b"k"] = b"v"
        except RuntimeError as e:
            errors.append(e)

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert errors and "thread that began it" in str(errors[0])
    w.commit()


def test_an_unfinished_write_dropped_by_another_thread_is_reported(tmp_path):
    db = mmkit.Db(tmp_path / "abandoned.kv", create=True)
    holder = [db.write()]
    holder[0].table()[b"k"] = b"v"

    def drop_it():
        holder.clear()  # the last reference goes away in this thread

    with pytest.warns(ResourceWarning, match="dropped by a thread other than its own"):
        t = threading.Thread(target=drop_it)
        t.start()
        t.join()
    # Its locks are its thread's: this handle refuses to write instead of hanging.
    with pytest.raises(RuntimeError, match="open the database again"):
        db.write()
    with db.read() as r:
        assert b"k" not in r.table()


def test_a_waiting_writer_releases_the_gil(db):
    w = db.write()
    got = []

    def second_writer():
        with db.write() as w2:  # waits for the first one
            got.append(w2.table()[b"k"])

    t = threading.Thread(target=second_writer)
    t.start()
    spins, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < 0.2:
        spins += 1
    assert spins > 1000 and not got
    w.table()[b"k"] = b"first"
    w.commit()
    t.join(timeout=10)
    assert got == [b"first"]


def test_watch(db):
    with db.write() as w:
        w.table()[b"user:1"] = b"a"
    watch = db.watch(b"user:", timeout=0.2)
    assert list(watch) == []  # nothing within the timeout
    with db.write() as w:
        t = w.table()
        t[b"user:1"] = b"b"
        t[b"user:2"] = b"c"
        t[b"other"] = b"ignored"
    changes = watch.wait(timeout=5)
    assert [(c.key, c.value) for c in changes] == [(b"user:1", b"b"), (b"user:2", b"c")]
    assert changes[0].txnid == db.last_commit == watch.seen
    with db.write() as w:
        w.table().delete(b"user:1")
    (gone,) = list(watch)
    assert gone.key == b"user:1" and gone.value is None
    # An exact key, another table.
    exact = db.watch(b"cfg", table="settings", exact=True)
    with db.write() as w:
        w.table("settings")[b"cfg2"] = b"no"
        w.table("settings")[b"cfg"] = b"yes"
    assert [(c.key, c.value) for c in exact.wait(5)] == [(b"cfg", b"yes")]
    exact.close()
    with pytest.raises(ValueError, match="closed"):
        exact.wait(0)
    with pytest.raises(ValueError, match="timeout"):
        watch.wait(-1)


def test_watch_releases_the_gil_and_wakes_on_commit(db):
    watch = db.watch(b"", timeout=5)
    got = []
    waiter = threading.Thread(target=lambda: got.append(next(watch)))
    waiter.start()
    spins, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < 0.2:
        spins += 1
    with db.write() as w:
        w.table()[b"wake"] = b"1"
    waiter.join()
    assert spins > 1000 and got[0].key == b"wake"
    assert time.monotonic() - t0 < 4, "the waiter woke on the commit, not the timeout"


def test_stat_check_compact(db, tmp_path):
    with db.write() as w:
        t = w.table("t")
        for i in range(500):
            t[b"%04d" % i] = b"v" * 100
    r = db.read()
    s = db.stat()
    assert s.tables == {"t": 500} and s.readers == 1 and s.page_size == 4096
    assert s.oldest.pid == os.getpid() and s.oldest.alive and s.oldest.lag == 0
    assert s.file_size >= s.pages * s.page_size and s.txnid == db.last_commit
    # The durable commit went through the redo log; the data file is older.
    assert s.durable == s.txnid and s.log_chain[1] == s.txnid and s.flushed < s.txnid
    r.close()
    c = db.check()
    assert c.tables[0][:2] == ("t", 500) and c.leaked_pages == 0
    copy = tmp_path / "copy.kv"
    assert db.compact(copy).tables[0][:2] == ("t", 500)
    with mmkit.Db(copy).read() as r2:
        assert len(r2.table("t")) == 500
    with pytest.raises(FileExistsError):
        db.compact(copy)


def test_pickle_and_repr(db):
    again = pickle.loads(pickle.dumps(db))
    assert again.path == db.path and again.durability == "immediate"
    assert "app.kv" in repr(db) and "ReadTransaction" in repr(db.read())


# --- bad input --------------------------------------------------------------


def test_bad_input(tmp_path, db):
    missing = tmp_path / "missing.kv"
    with pytest.raises(FileNotFoundError) as e:
        mmkit.Db(missing)
    assert str(missing) in str(e.value) and "Db" in str(e.value)
    with pytest.raises(IsADirectoryError):
        mmkit.Db(tmp_path)
    junk = tmp_path / "junk.kv"
    junk.write_bytes(b"not a database" * 10_000)
    with pytest.raises(mmkit.CorruptError, match="not an mmkit-kv") as e:
        mmkit.Db(junk)
    assert str(junk) in str(e.value) and isinstance(e.value, mmkit.Error)
    with pytest.raises(ValueError, match="durability"):
        mmkit.Db(tmp_path / "x.kv", create=True, durability="later")
    with pytest.raises(ValueError, match="reserve"):
        mmkit.Db(tmp_path / "x.kv", create=True, reserve=-1)
    with pytest.raises(ValueError, match="durability"):
        db.write(durability="never")
    with db.write() as w:
        with pytest.raises(ValueError, match="too long") as e:
            w.table()[b"k" * 5000] = b"v"
        assert "Table.put" in str(e.value) and str(db.path) in str(e.value)
        with pytest.raises(ValueError, match="table name"):
            w.table("t" * 300)
        with pytest.raises(TypeError, match="key"):
            w.table()[5] = b"v"
        with pytest.raises(TypeError, match="value"):
            w.table()[b"k"] = 5
    ro = mmkit.Db(db.path, read_only=True)
    with pytest.raises(ValueError, match="read-only"):
        ro.write()
    db.close()
    with pytest.raises(ValueError, match="closed"):
        db.read()


def test_corrupt_page_raises_corrupt_error(tmp_path):
    path = tmp_path / "c.kv"
    with mmkit.Db(path, create=True) as d:
        with d.write() as w:
            t = w.table("t")
            for i in range(2000):
                t[b"%05d" % i] = b"x" * 50
    size = path.stat().st_size
    with open(path, "r+b") as f:
        for page in range(4, size // 4096):
            f.seek(page * 4096 + 200)
            f.write(b"\xde\xad\xbe\xef" * 8)
    with pytest.raises(mmkit.CorruptError, match="corrupt page") as e:
        mmkit.Db(path).check()
    assert str(path) in str(e.value) and "Db.check" in str(e.value)


FULL_DISK = """
import errno, resource, signal, sys, mmkit
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
db = mmkit.Db(sys.argv[1])
try:
    with db.write() as w:
        t = w.table()
        for i in range(4000):
            t[b"%05d" % i] = bytes(1000)
    print("committed")
except OSError as e:
    print(errno.errorcode[e.errno], sys.argv[1] in str(e))
"""


def test_a_full_disk_is_an_error_and_keeps_the_last_commit(tmp_path):
    path = tmp_path / "full.kv"
    with mmkit.Db(path, create=True) as d, d.write() as w:
        w.table()[b"kept"] = b"yes"
    proc = run_python(FULL_DISK, path, path.stat().st_size + (256 << 10))
    assert proc.stdout.split() in (["EFBIG", "True"], ["ENOSPC", "True"]), proc.stdout + proc.stderr
    with mmkit.Db(path) as d:
        with d.read() as r:
            assert list(r.table().items()) == [(b"kept", b"yes")]
        d.check()


def test_permission_denied(public_dir):
    path = public_dir / "p.kv"
    mmkit.Db(path, create=True).close()
    os.chmod(path, 0o600)
    assert str(path) in permission_error_as_nobody("mmkit.Db(sys.argv[1])", path)


# --- fork ---------------------------------------------------------------------


def test_a_db_works_in_a_forked_child_but_inherited_transactions_do_not(db):
    with db.write() as w:
        w.table()[b"k"] = b"parent"
    r = db.read()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            with pytest.raises(ValueError, match="before fork"):
                r.table()
            with db.write() as w:  # the child's own handle
                w.table()[b"k"] = b"child"
            code = 0
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert r.table()[b"k"] == b"parent"  # the parent's snapshot is untouched
    r.close()
    with db.read() as fresh:
        assert fresh.table()[b"k"] == b"child"


# --- two processes, a writer SIGKILLed mid-transaction ---------------------------

ACCOUNTS, TOTAL = 40, 40_000

WRITER = """
import os, random, sys, time, mmkit
db = mmkit.Db(sys.argv[1], durability="eventual")
tag, seed, accounts = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
out = os.fdopen(1, "w", buffering=1)
seq = 0
while True:
    with db.write() as w:
        acct = w.table("acct")
        moves = 400 if seq % 7 == 6 else rng.randrange(1, 8)  # large ones too
        for move in range(moves):
            if move == 200:
                out.write("mid %d\\n" % seq)  # the test may kill us now, mid-transaction
                if seed % 2 == 0:
                    # The rounds that kill here: long enough for the kill
                    # to land, or the transaction often commits first.
                    time.sleep(0.5)
            a, b = rng.sample(range(accounts), 2)
            amount = rng.randrange(1, 50)
            ka, kb = b"a%03d" % a, b"a%03d" % b
            acct[ka] = b"%d" % (int(acct[ka]) - amount)
            acct[kb] = b"%d" % (int(acct[kb]) + amount)
        w.table("log")[b"%s:%08d" % (tag.encode(), seq)] = b"%d" % moves
    out.write("%d\\n" % seq)
    seq += 1
"""

READER = """
import os, sys, mmkit
db = mmkit.Db(sys.argv[1])
stop, total, accounts = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
snapshots = 0
while not os.path.exists(stop):
    with db.read() as r:
        balances = [int(v) for v in r.table("acct").values()]
        if len(balances) != accounts or sum(balances) != total:
            sys.exit(f"partial transaction seen: {len(balances)} accounts, sum {sum(balances)}")
        log = r.table("log")
        if len(log) != len(list(log.keys())):
            sys.exit("log count does not match its keys")
    snapshots += 1
print(snapshots)
"""


class Acks:
    """Collects a writer's acknowledgements (one committed seq a line) and
    the large transactions it is in the middle of (`mid SEQ` lines)."""

    def __init__(self, proc):
        self.proc, self.seqs, self.mids = proc, [], []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith("mid "):
                self.mids.append(int(line.split()[1]))
            elif line.endswith("\n"):
                self.seqs.append(int(line))

    def wait_for_mid(self, timeout=15):
        deadline = time.monotonic() + timeout
        while not self.mids and time.monotonic() < deadline:
            time.sleep(0.0005)
        return bool(self.mids)

    def wait_for(self, n, timeout=15):
        deadline = time.monotonic() + timeout
        while len(self.seqs) < n and time.monotonic() < deadline:
            time.sleep(0.002)
        return len(self.seqs) >= n


def test_sigkilled_writer_never_shows_a_partial_transaction_and_loses_no_commit(tmp_path, cli):
    path, stop = tmp_path / "bank.kv", tmp_path / "stop"
    with mmkit.Db(path, create=True) as d, d.write() as w:
        acct = w.table("acct")
        for i in range(ACCOUNTS):
            acct[b"a%03d" % i] = b"%d" % (TOTAL // ACCOUNTS)
        w.table("log")
    reader = python_child(READER, path, stop, TOTAL, ACCOUNTS, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rng = random.Random(99)
    acked, killed_mid = {}, []
    for round_ in range(4):
        tag = f"w{round_}"
        writer = Acks(python_child(WRITER, path, tag, round_, ACCOUNTS, stdout=subprocess.PIPE, text=True))
        t0 = time.monotonic()
        assert writer.wait_for(1), f"writer {tag} never committed"
        # The next writer starts at once after a kill (liveness, not timeouts).
        assert time.monotonic() - t0 < 5
        if round_ % 2 == 0:
            # Half-way through a 400-move transaction.
            assert writer.wait_for_mid(), f"writer {tag} never started a large transaction"
        else:
            writer.wait_for(rng.randrange(5, 60))
            time.sleep(rng.random() * 0.02)
        writer.proc.send_signal(signal.SIGKILL)
        writer.proc.wait()
        writer.thread.join(timeout=10)
        acked[tag] = writer.seqs
        if round_ % 2 == 0 and writer.mids[-1] not in writer.seqs:
            killed_mid.append((tag, writer.mids[-1]))
    stop.touch()
    out, err = reader.communicate(timeout=30)
    assert reader.returncode == 0, err
    assert int(out) > 0
    assert killed_mid, "no writer was killed inside a transaction"
    with mmkit.Db(path) as d, d.read() as r:
        balances = [int(v) for v in r.table("acct").values()]
        assert sum(balances) == TOTAL
        log = set(r.table("log").keys())
        for tag, seqs in acked.items():
            assert seqs, f"{tag} acknowledged nothing"
            for seq in seqs:
                assert b"%s:%08d" % (tag.encode(), seq) in log, f"{tag} lost acknowledged commit {seq}"
        for tag, mid in killed_mid:
            assert b"%s:%08d" % (tag.encode(), mid) not in log, f"{tag}'s transaction {mid} was half-committed"
    assert run_cli(cli, "kv", "check", path).returncode == 0


def test_two_processes_watch_and_write(tmp_path):
    path = tmp_path / "w.kv"
    mmkit.Db(path, create=True).close()
    watcher = python_child(
        """
        import sys, mmkit
        db = mmkit.Db(sys.argv[1])
        w = db.watch(b"job:", timeout=10)
        print("ready", flush=True)
        seen = {}
        for c in w:
            seen[c.key] = c.value
            if len(seen) == 3:
                break
        print(sorted(seen.items()) == [(b"job:%d" % i, b"done") for i in range(3)], flush=True)
        """,
        path,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert watcher.stdout.readline() == "ready\n"
    db = mmkit.Db(path)
    for i in range(3):
        with db.write() as w:
            w.table()[b"job:%d" % i] = b"done"
    out, _ = watcher.communicate(timeout=30)
    assert out == "True\n"


# --- the CLI on the same database ------------------------------------------------


def test_cli_reads_what_python_writes(tmp_path, cli):
    path = tmp_path / "cli.kv"
    with mmkit.Db(path, create=True) as d, d.write() as w:
        w.table("cfg")[b"color"] = b"blue"
        w.table()[b"tab\tkey"] = b"line\nvalue"
    assert run_cli(cli, "kv", "get", path, "color", "--table", "cfg").stdout == "blue\n"
    lines = run_cli(cli, "kv", "scan", path, "--json").stdout.splitlines()
    assert [json.loads(line) for line in lines] == [{"key": "tab\tkey", "value": "line\nvalue"}]
    kv = mmkit.Kv(path)
    kv.set("volume", "11")
    assert run_cli(cli, "kv", "get", path, "volume").stdout == "11\n"
    stat = json.loads(run_cli(cli, "kv", "stat", path, "--json").stdout)
    assert {t["name"]: t["entries"] for t in stat["tables"]} == {"cfg": 1, "default": 2}


def test_python_reads_what_the_cli_writes(tmp_path, cli):
    path = tmp_path / "cli.kv"
    run_cli(cli, "kv", "create", path)
    run_cli(cli, "kv", "put", path, "user:1", "ada")
    run_cli(cli, "kv", "put", path, "--table", "cfg", "color", "red")
    out = run_cli(cli, "kv", "load", path, "--batch", "2", input="a\t1\nb\t2\nc\\tx\t3\n").stdout
    assert out.split() == ["2", "3"]
    db = mmkit.Db(path)
    with db.read() as r:
        assert r.tables() == ["cfg", "default"]
        assert r.table("cfg")[b"color"] == b"red"
        assert list(r.table().items()) == [(b"a", b"1"), (b"b", b"2"), (b"c\tx", b"3"), (b"user:1", b"ada")]
    assert mmkit.Kv(path).get_str("user:1") == "ada"
    # A watch in Python sees the CLI's commit.
    watch = db.watch(b"user:")
    run_cli(cli, "kv", "put", path, "user:2", "grace")
    assert [(c.key, c.value) for c in watch.wait(timeout=10)] == [(b"user:2", b"grace")]
    proc = run_python("import sys, mmkit; print(mmkit.Kv(sys.argv[1]).get_str('user:2'))", path)
    assert proc.stdout == "grace\n", proc.stderr
