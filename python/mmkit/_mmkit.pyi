"""Type stubs of the extension module ``mmkit._mmkit`` (re-exported by ``mmkit``)."""

import os
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Literal, Optional, Union, final

import numpy as np
import numpy.typing as npt
from typing_extensions import disjoint_base

__version__: str
__all__ = [
    "Appendable",
    "AppendableView",
    "CorruptError",
    "Cursor",
    "Error",
    "MappedArray",
    "Queue",
    "Reader",
    "Record",
    "Residency",
    "SharedMemory",
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
