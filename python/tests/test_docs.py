"""The examples in the documentation run."""

import pathlib
import re
import textwrap

import mmkit

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_package_docstring_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = mmkit.__doc__.split("Example::", 1)[1]
    exec(textwrap.dedent(code), {})  # noqa: S102


def test_readme_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    import numpy as np

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
