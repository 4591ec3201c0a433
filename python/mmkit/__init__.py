"""mmkit for Python: memory-mapped data without the usual traps.

- ``open_array`` / ``create_array`` / ``Appendable``: ``.npy`` files as
  zero-copy numpy arrays that can grow, and that a file truncated by
  another process turns into zeros instead of a SIGBUS.
- ``Queue``: a persistent queue shared by any number of processes (Python
  or the ``mmkit`` command line), which loses no acknowledged message when
  a process is killed.
- ``Kv`` / ``Db``: a crash-safe key-value store several processes share:
  ``Kv`` for settings and state the way MMKV is used (typed get/set, one
  commit each), ``Db`` with named tables, snapshot-isolated transactions,
  range and prefix iteration, and watches of a key prefix.
- ``Heap``: hash maps and vectors of numbers in a file or shared memory,
  used by several processes at once, surviving any of them being killed.
- ``SharedMemory``: ``multiprocessing.shared_memory.SharedMemory`` by
  name and contents, with no resource tracker unlinking segments that
  other processes still use.
- ``resident`` / ``touch`` / ``evict``: page-cache residency (vmtouch).

Example::

    import numpy as np, mmkit

    a = mmkit.create_array("points.npy", np.float32, (1000, 3))
    a[:, 0] = np.arange(1000)
    del a                                   # unmapped now, deterministically
    assert np.load("points.npy")[999, 0] == 999

    q = mmkit.Queue("events", create=True)
    q.append(b"hello")
    assert q.reader().next(timeout=1.0).payload == b"hello"

    kv = mmkit.Kv("settings.kv")            # created if missing
    kv.set("volume", 7)
    assert kv.get_int("volume") == 7

    db = mmkit.Db("app.kv", create=True)
    with db.write() as w:                   # commits at the end of the block
        w.table("users")[b"ada"] = b"lovelace"
    with db.read() as r:                    # one snapshot for the whole block
        assert r.table("users")[b"ada"] == b"lovelace"

    heap = mmkit.Heap("shared.heap", create=True)
    hits = heap.map("hits", key=str, value=int)
    hits["/"] = hits.get("/", 0) + 1
"""

from ._mmkit import (
    Appendable as Appendable,
    AppendableView as AppendableView,
    Change as Change,
    CorruptError as CorruptError,
    Cursor as Cursor,
    Db as Db,
    DbCheck as DbCheck,
    DbStat as DbStat,
    Error as Error,
    Heap as Heap,
    HeapCheck as HeapCheck,
    HeapMap as HeapMap,
    HeapObject as HeapObject,
    HeapStat as HeapStat,
    HeapVector as HeapVector,
    Kv as Kv,
    KvIterator as KvIterator,
    MappedArray as MappedArray,
    Queue as Queue,
    ReadTransaction as ReadTransaction,
    Reader as Reader,
    Record as Record,
    Residency as Residency,
    SharedMemory as SharedMemory,
    SnapshotInfo as SnapshotInfo,
    Table as Table,
    Watch as Watch,
    WriteTransaction as WriteTransaction,
    __version__ as __version__,
    create_array as create_array,
    evict as evict,
    open_array as open_array,
    resident as resident,
    touch as touch,
)

__all__ = [
    "Appendable",
    "AppendableView",
    "Change",
    "CorruptError",
    "Cursor",
    "Db",
    "DbCheck",
    "DbStat",
    "Error",
    "Heap",
    "HeapCheck",
    "HeapMap",
    "HeapObject",
    "HeapStat",
    "HeapVector",
    "Kv",
    "KvIterator",
    "MappedArray",
    "Queue",
    "ReadTransaction",
    "Reader",
    "Record",
    "Residency",
    "SharedMemory",
    "SnapshotInfo",
    "Table",
    "Watch",
    "WriteTransaction",
    "create_array",
    "evict",
    "open_array",
    "resident",
    "touch",
]
