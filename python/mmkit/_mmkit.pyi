"""Type stubs of the extension module ``mmkit._mmkit`` (re-exported by ``mmkit``)."""

import os
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Literal, Optional, Union, final

import numpy as np
import numpy.typing as npt
from typing_extensions import disjoint_base

__version__: str
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
    "__version__",
    "create_array",
    "evict",
    "open_array",
    "resident",
    "touch",
]

_Path = Union[str, "os.PathLike[str]"]
_Bytes = Union[bytes, bytearray, memoryview]
_Shape = Union[int, Iterable[int]]

class Error(Exception):
    """Base class of mmkit's own errors (those that are not an OSError or a ValueError)."""

class CorruptError(Error):
    """A file or segment is damaged: a bad header, a checksum mismatch, a file truncated under its mapping."""

# Arrays

@final
class MappedArray:
    """The ``base`` of an array from ``open_array``/``create_array``: owns the mapping.

    The mapping is released when the last array using it is garbage-collected.
    """

    @property
    def path(self) -> str: ...
    @property
    def mode(self) -> Literal["r", "r+", "c"]: ...
    def flush(self) -> None:
        """Writes changed pages back to the file (msync); a no-op for "r" and "c"."""

def open_array(path: _Path, mode: Literal["r", "r+", "c"] = "r") -> np.ndarray:
    """Opens an ``.npy`` file as a zero-copy numpy array of its mapping.

    ``mode`` is numpy's: "r" (read-only; not writeable), "r+" (writes go to the
    file) or "c" (copy-on-write). ``a.base`` keeps the mapping alive.

    >>> a = mmkit.open_array("a.npy", "r+")
    >>> a[0] = 1.0          # written to the file
    """

def create_array(
    path: _Path,
    dtype: npt.DTypeLike,
    shape: _Shape,
    order: Literal["C", "F"] = "C",
) -> np.ndarray:
    """Creates (or truncates) an ``.npy`` file of zeros; returns a writeable view (numpy's "w+").

    >>> a = mmkit.create_array("grid.npy", "float64", (1000, 1000))
    """

@final
class AppendableView:
    """The ``base`` of an array from ``Appendable.array()``; keeps ``close()`` from unmapping."""

@final
class Appendable:
    """An ``.npy`` file that grows along its first axis while numpy reads it.

    >>> log = mmkit.Appendable("log.npy", "float32", (3,), create=True)
    >>> log.append(np.ones((10, 3), np.float32))
    11
    """

    def __new__(
        cls,
        path: _Path,
        dtype: Optional[npt.DTypeLike] = None,
        row_shape: Optional[_Shape] = None,
        create: bool = False,
    ) -> "Appendable": ...
    def append(self, rows: npt.ArrayLike) -> int:
        """Appends one row or ``(n, *row_shape)`` rows; returns the row count afterwards."""
    def array(self) -> np.ndarray:
        """The rows so far, zero-copy and read-only; ``close()`` raises BufferError while it lives."""
    def sync(self) -> None:
        """Flushes rows, then header, to stable storage."""
    def close(self) -> None:
        """Trims the file and releases it; BufferError while arrays from ``array()`` live."""
    @property
    def closed(self) -> bool: ...
    @property
    def rows(self) -> int: ...
    @property
    def dtype(self) -> np.dtype: ...
    @property
    def row_shape(self) -> tuple[int, ...]: ...
    @property
    def path(self) -> str: ...
    def __len__(self) -> int: ...
    def __enter__(self) -> "Appendable": ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

# Queue

@final
class Record:
    """One message of a queue."""

    @property
    def index(self) -> int: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def timestamp(self) -> int:
        """Nanoseconds since the Unix epoch when appended (0 without timestamps)."""
    def __len__(self) -> int: ...

@disjoint_base
class Reader:
    """A reader of a queue; iteration yields the messages there are now."""

    def next(self, timeout: Optional[float] = None) -> Optional[Record]:
        """The next message, waiting up to ``timeout`` seconds (None: forever); None on timeout.

        The GIL is released while waiting; Ctrl-C interrupts the wait.
        """
    def __iter__(self) -> Iterator[Record]: ...
    def __next__(self) -> Record: ...
    @property
    def position(self) -> int: ...
    def seek(self, index: int) -> None: ...

@final
class Cursor(Reader):
    """A reader whose position ``commit()`` stores in the queue."""

    def commit(self) -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def committed(self) -> int: ...

@final
class Queue:
    """A persistent, multi-process message queue in a directory.

    >>> q = mmkit.Queue("/tmp/q", create=True)
    >>> q.append(b"hello")
    0
    >>> q.reader().next(timeout=1.0).payload
    b'hello'
    """

    def __new__(
        cls,
        path: _Path,
        create: bool = False,
        segment_size: Optional[int] = None,
        max_message_size: Optional[int] = None,
        cache_behind: Optional[int] = 268435456,
    ) -> "Queue": ...
    def append(self, data: _Bytes) -> int: ...
    def append_batch(self, messages: Iterable[_Bytes]) -> list[int]: ...
    def reader(self, start: Union[Literal["beginning", "end"], int] = "beginning") -> Reader:
        """A reader from "beginning" (the default), "end" or an index."""
    def cursor(self, name: str) -> Cursor: ...
    def sync(self) -> None: ...
    def close(self) -> None: ...
    @property
    def path(self) -> str: ...
    @property
    def segment_size(self) -> int: ...
    @property
    def max_message_size(self) -> int: ...
    @property
    def first_index(self) -> int: ...
    @property
    def end_index(self) -> int: ...
    def __enter__(self) -> "Queue": ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

# Shared memory

@final
class SharedMemory:
    """POSIX named shared memory, compatible with ``multiprocessing.shared_memory.SharedMemory``.

    No resource tracker ever unlinks the segment: it lives until ``unlink()``.

    >>> shm = mmkit.SharedMemory(create=True, size=1024)
    >>> shm.buf[:5] = b"hello"
    """

    def __new__(
        cls, name: Optional[str] = None, create: bool = False, size: int = 0, *, track: bool = True
    ) -> "SharedMemory":
        """``track`` is accepted for code written for Python 3.13, and ignored: nothing tracks mmkit segments."""
    @property
    def name(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def buf(self) -> Optional[memoryview]: ...
    def close(self) -> None: ...
    def unlink(self) -> None: ...
    def __enter__(self) -> "SharedMemory": ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

# Residency

@final
class Residency:
    """How much of a file sits in the page cache."""

    @property
    def path(self) -> str: ...
    @property
    def resident_pages(self) -> int: ...
    @property
    def total_pages(self) -> int: ...
    @property
    def page_size(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def resident_bytes(self) -> int: ...
    @property
    def fraction(self) -> float: ...

def resident(path: _Path) -> Residency:
    """How many pages of the file are in the page cache."""

def touch(path: _Path) -> Residency:
    """Loads the file's missing pages into the page cache; returns the residency found before."""

def evict(path: _Path) -> None:
    """Drops the file's clean pages from the page cache."""

# Key-value store

_Key = Union[bytes, bytearray, memoryview, str]
_Durability = Literal["immediate", "eventual", "group"]

@final
class Kv:
    """A key-value store used the way MMKV is: one line to open (creating the file), string keys,
    typed values, each ``set``/``remove`` its own commit that survives a crash of the process.

    Values are stored as MMKV stores them (int: 8 bytes little-endian, float: 8, bool: 1,
    str: UTF-8, bytes as is); read one back with the getter of its type. ``kv[key]`` is the
    raw bytes; iteration yields the keys as str (bytes that are not UTF-8 as surrogate
    escapes, as ``os.fsdecode`` does). The file is a ``Db`` whose default table holds the keys.

    >>> kv = mmkit.Kv("settings.kv")
    >>> kv.set("volume", 7)
    >>> kv.get_int("volume")
    7
    """

    def __new__(cls, path: _Path, durability: _Durability = "eventual") -> "Kv": ...
    def set(self, key: _Key, value: Union[int, float, bool, str, bytes, bytearray, memoryview]) -> None:
        """Sets ``key`` in one commit; the GIL is released while it waits for another writer."""
    def get(self, key: _Key, default: Optional[Any] = None) -> Optional[Any]:
        """The stored bytes, or ``default``."""
    def get_bytes(self, key: _Key, default: Optional[Any] = None) -> Optional[Any]: ...
    def get_int(self, key: _Key, default: Optional[Any] = None) -> Optional[Any]:
        """The int set under ``key``, or ``default``; ValueError if the value is not 8 bytes."""
    def get_float(self, key: _Key, default: Optional[Any] = None) -> Optional[Any]: ...
    def get_bool(self, key: _Key, default: Optional[Any] = None) -> Optional[Any]: ...
    def get_str(self, key: _Key, default: Optional[Any] = None) -> Optional[Any]:
        """The str set under ``key``, or ``default``; ValueError if the bytes are not UTF-8."""
    def remove(self, key: _Key) -> bool:
        """Removes ``key`` in one commit; whether it was there."""
    def keys(self) -> Iterator[str]: ...
    def sync(self) -> None:
        """Makes every commit so far durable (one fdatasync)."""
    def close(self) -> None: ...
    @property
    def path(self) -> str: ...
    @property
    def durability(self) -> _Durability: ...
    def __getitem__(self, key: _Key, /) -> bytes: ...
    def __setitem__(self, key: _Key, value: Union[int, float, bool, str, bytes, bytearray, memoryview], /) -> None: ...
    def __delitem__(self, key: _Key, /) -> None: ...
    def __contains__(self, key: _Key, /) -> bool: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[str]: ...
    def __enter__(self) -> "Kv": ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

@final
class Db:
    """A key-value database (one file plus its ``-lock`` file) shared by any number of processes:
    named tables, snapshot-isolated read transactions that take no lock, one write transaction
    at a time across all processes.

    ``durability``: "immediate" (a commit is on disk when it returns), "eventual" (no sync:
    survives a crash of the process, not of the machine) or "group" (immediate, one sync shared
    by concurrent committers). ``reserve``: address space for the mapping, the most the file may
    grow to while open (default 1 TiB; costs no memory).

    >>> db = mmkit.Db("app.kv", create=True)
    >>> with db.write() as w:
    ...     w.table("users")[b"ada"] = b"lovelace"
    >>> with db.read() as r:
    ...     r.table("users")[b"ada"]
    b'lovelace'
    """

    def __new__(
        cls,
        path: _Path,
        create: bool = False,
        durability: _Durability = "immediate",
        read_only: bool = False,
        reserve: Optional[int] = None,
    ) -> "Db": ...
    def read(self) -> "ReadTransaction":
        """A read transaction: one snapshot of the last commit for its whole life."""
    def write(self, durability: Optional[_Durability] = None) -> "WriteTransaction":
        """The write transaction, once no other thread or process has it (the GIL is released while waiting).

        In a ``with`` block it commits on a normal exit and aborts on an exception. It belongs
        to the calling thread; a second one on the same thread raises RuntimeError.
        """
    def watch(
        self,
        prefix: Optional[_Key] = None,
        timeout: Optional[float] = None,
        *,
        table: str = "default",
        exact: bool = False,
    ) -> "Watch":
        """Watches the keys of ``table`` starting with ``prefix`` (exactly ``prefix`` with ``exact``).

        Iterating yields a ``Change`` per changed key, waiting up to ``timeout`` seconds
        (None: forever) with the GIL released; the iteration ends after ``timeout`` without one.
        """
    def stat(self) -> "DbStat": ...
    def check(self) -> "DbCheck":
        """Verifies the whole file; CorruptError (naming the page and table) on damage."""
    def compact(self, dst: _Path) -> "DbCheck":
        """Writes a compacted copy to ``dst`` (which must not exist) while others keep working."""
    def sync(self) -> None: ...
    def close(self) -> None:
        """Releases the handle; transactions, iterators and watches made from it keep working."""
    @property
    def path(self) -> str: ...
    @property
    def durability(self) -> _Durability: ...
    @property
    def last_commit(self) -> int: ...
    def __enter__(self) -> "Db": ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

@final
class ReadTransaction:
    """One committed snapshot, unchanged by later commits; values read from it are ``bytes`` copies.

    Close it (or use ``with``): an open one keeps the pages it sees from being reused.
    """

    def table(self, name: str = "default") -> "Table":
        """The table ``name``; KeyError if it does not exist in this snapshot."""
    def tables(self) -> list[str]: ...
    @property
    def txnid(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def close(self) -> None: ...
    def __enter__(self) -> "ReadTransaction": ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

@final
class WriteTransaction:
    """The one write transaction (across all processes); commits on a normal ``with`` exit, aborts on an exception."""

    def table(self, name: str = "default") -> "Table":
        """The table ``name``, created if missing (the creation commits with the transaction)."""
    def tables(self) -> list[str]: ...
    def drop_table(self, name: str) -> bool: ...
    def commit(self) -> int:
        """Commits (the GIL is released while it syncs); returns the commit id."""
    def abort(self) -> None: ...
    @property
    def txnid(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def __enter__(self) -> "WriteTransaction": ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

@final
class Table:
    """A table seen through a transaction: ``bytes`` keys to ``bytes`` values, in key order.

    Keys and values may be given as bytes, bytearray, memoryview or str (stored as UTF-8).
    Writing needs a table from a write transaction (ValueError otherwise).
    """

    def get(self, key: _Key, default: Optional[Any] = None) -> Optional[Any]: ...
    def range(
        self, start: Optional[_Key] = None, end: Optional[_Key] = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Pairs with ``start <= key < end``, in key order (last first with ``reverse``)."""
    def prefix(self, prefix: _Key, *, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]: ...
    def keys(self) -> Iterator[bytes]: ...
    def values(self) -> Iterator[bytes]: ...
    def items(self) -> Iterator[tuple[bytes, bytes]]: ...
    def first(self) -> Optional[tuple[bytes, bytes]]: ...
    def last(self) -> Optional[tuple[bytes, bytes]]: ...
    def put(self, key: _Key, value: _Key) -> None: ...
    def append(self, key: _Key, value: _Key) -> None:
        """Adds ``key``, which must sort after every key: the sorted bulk-load path."""
    def delete(self, key: _Key) -> bool: ...
    def delete_range(self, start: Optional[_Key] = None, end: Optional[_Key] = None) -> int: ...
    def clear(self) -> None: ...
    @property
    def name(self) -> str: ...
    def __getitem__(self, key: _Key, /) -> bytes: ...
    def __setitem__(self, key: _Key, value: _Key, /) -> None: ...
    def __delitem__(self, key: _Key, /) -> None: ...
    def __contains__(self, key: _Key, /) -> bool: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[bytes]: ...

@final
class KvIterator:
    """The iterator of ``Table.range``/``prefix``/``keys``/``values``/``items`` and of ``Kv``.

    It copies entries out in chunks and resumes after the last key it returned.
    """

    def __iter__(self) -> "KvIterator": ...
    def __next__(self) -> Any: ...

@final
class Change:
    """A change a watch saw: ``value`` None means the key was deleted."""

    @property
    def key(self) -> bytes: ...
    @property
    def value(self) -> Optional[bytes]: ...
    @property
    def txnid(self) -> int: ...

@final
class Watch:
    """Waits without polling for commits that change the watched keys."""

    def wait(self, timeout: Optional[float] = None) -> list[Change]:
        """The changes since the last call, waiting up to ``timeout`` seconds; [] on timeout."""
    @property
    def seen(self) -> int: ...
    def close(self) -> None: ...
    def __iter__(self) -> "Watch": ...
    def __next__(self) -> Change: ...
    def __enter__(self) -> "Watch": ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

@final
class SnapshotInfo:
    """The oldest snapshot a reader holds (``DbStat.oldest``)."""

    @property
    def txnid(self) -> int: ...
    @property
    def pid(self) -> int: ...
    @property
    def alive(self) -> bool: ...
    @property
    def age(self) -> float:
        """Seconds since the read transaction began."""
    @property
    def lag(self) -> int:
        """Commits made since its snapshot."""

@final
class DbStat:
    @property
    def path(self) -> str: ...
    @property
    def txnid(self) -> int: ...
    @property
    def durable(self) -> int: ...
    @property
    def flushed(self) -> int:
        """The last commit on disk in the data file itself."""
    @property
    def log_chain(self) -> tuple[int, int, int] | None:
        """The redo log's chain: (first commit, last commit, bytes)."""
    @property
    def tables(self) -> dict[str, int]:
        """Entries per table."""
    @property
    def pages(self) -> int: ...
    @property
    def free_pages(self) -> int: ...
    @property
    def page_size(self) -> int: ...
    @property
    def file_size(self) -> int: ...
    @property
    def readers(self) -> int: ...
    @property
    def oldest(self) -> Optional[SnapshotInfo]: ...

@final
class DbCheck:
    @property
    def path(self) -> str: ...
    @property
    def txnid(self) -> int: ...
    @property
    def tables(self) -> list[tuple[str, int, int]]:
        """(name, entries, pages) per table."""
    @property
    def pages(self) -> int: ...
    @property
    def free_pages(self) -> int: ...
    @property
    def leaked_pages(self) -> int: ...

# Shared heap

_MapType = Union[type, str]

@final
class Heap:
    """A heap shared by processes, in a file or in POSIX shared memory, growable while in use and
    robust to any process being killed at any instruction. It holds named hash maps and vectors.

    ``create=True`` creates it (mode 0600, ``size`` bytes, growable to ``max_size``, default
    64 GiB) when missing.

    >>> heap = mmkit.Heap(shm="app-heap", create=True)
    >>> hits = heap.map("hits", key=str, value="uint64")
    >>> hits["/"] = 1
    """

    def __new__(
        cls,
        path: Optional[_Path] = None,
        shm: Optional[str] = None,
        create: bool = False,
        size: int = 1048576,
        max_size: Optional[int] = None,
    ) -> "Heap": ...
    def map(self, name: str, key: Optional[_MapType] = None, value: Optional[_MapType] = None) -> "HeapMap":
        """The hash map ``name``, created if missing.

        Types: bytes, str, int (int64), "uint64", float (float64); left out, those of the
        existing map, or bytes. TypeError if the map exists with other types.
        """
    def vector(self, name: str, dtype: Optional[npt.DTypeLike] = None) -> "HeapVector":
        """The vector ``name`` of native int8..int64, uint8..uint64, float32 or float64 numbers.

        Created if missing; ``dtype`` left out: the existing vector's, or float64.
        """
    def remove(self, name: str) -> bool: ...
    def objects(self) -> list["HeapObject"]: ...
    def stat(self) -> "HeapStat": ...
    def check(self, repair: bool = False) -> "HeapCheck":
        """Verifies every structure; CorruptError on an inconsistency, a report otherwise."""
    def unlink(self) -> None:
        """Removes the heap's name (shm segment or file); open handles keep working."""
    def close(self) -> None: ...
    @property
    def size(self) -> int: ...
    @property
    def max_size(self) -> int: ...
    @property
    def path(self) -> str: ...
    @property
    def shm(self) -> Optional[str]: ...
    def __enter__(self) -> "Heap": ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

@final
class HeapMap:
    """A concurrent hash map in a shared heap; keys and values are copied in and out.

    Lookups take no lock; writes lock one stripe (and release the GIL). ``items()``,
    ``keys()`` and ``values()`` are copies taken while writers are held off for a moment.
    """

    def get(self, key: Any, default: Optional[Any] = None) -> Optional[Any]: ...
    def insert(self, key: Any, value: Any) -> Optional[Any]:
        """Sets ``key``; returns the value it replaced, or None."""
    def update(self, other: Union[Mapping[Any, Any], Iterable[tuple[Any, Any]]]) -> None:
        """Sets every pair of a mapping or of an iterable of ``(key, value)`` pairs, in order
        (as ``dict.update``), in groups that take the map's locks once."""
    def pop(self, key: Any, *default: Any) -> Any:
        """Removes ``key`` and returns its value; ``default`` if missing and given, else KeyError."""
    def items(self) -> list[tuple[Any, Any]]: ...
    def keys(self) -> list[Any]: ...
    def values(self) -> list[Any]: ...
    @property
    def name(self) -> str: ...
    @property
    def key_type(self) -> str: ...
    @property
    def value_type(self) -> str: ...
    def __getitem__(self, key: Any, /) -> Any: ...
    def __setitem__(self, key: Any, value: Any, /) -> None: ...
    def __delitem__(self, key: Any, /) -> None: ...
    def __contains__(self, key: Any, /) -> bool: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Any]: ...

@final
class HeapVector:
    """A vector of numbers in a shared heap; elements are copied in and out."""

    def append(self, value: Union[int, float]) -> None: ...
    def extend(self, values: npt.ArrayLike) -> None:
        """Appends all of ``values`` at once: other processes see none or all of them."""
    def pop(self) -> Union[int, float]: ...
    def truncate(self, length: int) -> None: ...
    def clear(self) -> None: ...
    def to_numpy(self) -> np.ndarray:
        """A numpy array copy, taken under the vector's lock."""
    def tolist(self) -> list[Union[int, float]]: ...
    @property
    def dtype(self) -> np.dtype: ...
    @property
    def name(self) -> str: ...
    def __getitem__(self, index: int, /) -> Union[int, float]: ...
    def __setitem__(self, index: int, value: Union[int, float], /) -> None: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Union[int, float]]: ...

@final
class HeapObject:
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> Literal["map", "vec", "string", "box", "unknown"]: ...
    @property
    def type_name(self) -> str: ...
    @property
    def bytes(self) -> Optional[int]: ...
    @property
    def len(self) -> Optional[int]: ...

@final
class HeapStat:
    """Where a heap's bytes are: ``header + used + free + overhead == size``."""

    @property
    def path(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def max_size(self) -> int: ...
    @property
    def header(self) -> int: ...
    @property
    def used(self) -> int: ...
    @property
    def free(self) -> int: ...
    @property
    def overhead(self) -> int: ...
    @property
    def blocks(self) -> int: ...
    @property
    def largest_free(self) -> int: ...
    @property
    def fragmentation(self) -> float: ...
    @property
    def objects(self) -> list[HeapObject]: ...

@final
class HeapCheck:
    """A heap without inconsistencies; ``clean`` is False when blocks leaked."""

    @property
    def clean(self) -> bool: ...
    @property
    def leaked_blocks(self) -> int: ...
    @property
    def leaked_bytes(self) -> int: ...
    @property
    def repairs(self) -> list[str]: ...
    @property
    def stat(self) -> HeapStat: ...
