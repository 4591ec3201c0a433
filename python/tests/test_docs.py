"""The examples in the documentation run."""

import pathlib
import re
import textwrap

import numpy as np
import pytest

import mmkit

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_package_docstring_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = mmkit.__doc__.split("Example::", 1)[1]
    exec(textwrap.dedent(code), {})  # noqa: S102


def python_blocks(text):
    return [textwrap.dedent(b) for b in re.findall(r"```python\n(.*?)```", text, re.S)]


@pytest.mark.parametrize(
    "name", ["Kv", "Db", "ReadTransaction", "WriteTransaction", "Table", "Heap", "HeapMap", "HeapVector"]
)
def test_class_docstring_examples(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(getattr(mmkit, name).__doc__)
    assert blocks, f"mmkit.{name} has no example"
    # The examples of the classes one gets from a Db or a Heap start from one.
    namespace = {"mmkit": mmkit, "np": np}
    namespace["db"] = mmkit.Db("doc.kv", create=True)
    namespace["heap"] = mmkit.Heap("doc.heap", create=True)
    for block in blocks:
        exec(block, namespace)  # noqa: S102


def test_readme_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first, *more = python_blocks(README.read_text())
    code = first
    np.save("points.npy", np.zeros((10, 3), np.float32))
    namespace = {}
    try:
        exec(code.replace('"/tmp/q"', '"q"'), namespace)  # noqa: S102
    finally:
        if "shm" in namespace:
            namespace["shm"].close()
            namespace["shm"].unlink()
    assert np.load("points.npy")[0].tolist() == [1.0, 1.0, 1.0]
    assert np.load("log.npy").shape == (100, 3)
    for block in more:
        exec(block, {})  # noqa: S102
