"""mmkit for Python: memory-mapped data without the usual traps.

- ``open_array`` / ``create_array`` / ``Appendable``: ``.npy`` files as
  zero-copy numpy arrays that can grow, and that a file truncated by
  another process turns into zeros instead of a SIGBUS.
- ``Queue``: a persistent queue shared by any number of processes (Python
  or the ``mmkit`` command line), which loses no acknowledged message when
  a process is killed.
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
"""

from ._mmkit import (
    Appendable as Appendable,
    AppendableView as AppendableView,
    CorruptError as CorruptError,
    Cursor as Cursor,
    Error as Error,
    MappedArray as MappedArray,
    Queue as Queue,
    Reader as Reader,
    Record as Record,
    Residency as Residency,
    SharedMemory as SharedMemory,
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
    "CorruptError",
    "Cursor",
    "Error",
    "MappedArray",
    "Queue",
    "Reader",
    "Record",
    "Residency",
    "SharedMemory",
    "create_array",
    "evict",
    "open_array",
    "resident",
    "touch",
]
