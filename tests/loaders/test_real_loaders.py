"""Real model loaders fed through the verified descriptor (docs/LOADERS.md).

safetensors (it reopens a file by name and maps it), ONNX (``onnx.load`` on a file
object) and PyTorch (``torch.load`` on a file object, ``weights_only=True``) load what
``appliance.load`` verified: the sealed private copy, never the store file. The proof that
the store path is never opened: an inotify watch on the store's objects (every open or
read of an object file is an event) stays silent while the loader runs, and the file that
safetensors mapped (``/proc/self/maps``) is the sealed memfd or the unnamed copy, whose
inode is the verified descriptor's, not the store object's.
"""

from __future__ import annotations

import ctypes
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conformance.driver import REPO
from conftest_load import Site, make_site

import appliance

np = pytest.importorskip("numpy")

IN_ACCESS, IN_OPEN = 0x001, 0x020
_EVENT = struct.Struct("iIII")


@contextmanager
def watch_opens(directory: Path) -> Iterator[list[str]]:
    """inotify on ``directory`` and every folder under it: the names opened or read."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert fd >= 0, os.strerror(ctypes.get_errno())
    seen: list[str] = []
    try:
        folders = [d for d, _dirs, _files in os.walk(directory)]  # before watching: walks open
        for dirpath in folders:
            wd = libc.inotify_add_watch(fd, dirpath.encode(), IN_OPEN | IN_ACCESS)
            assert wd >= 0, os.strerror(ctypes.get_errno())
        yield seen
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            data = b""
        while data:
            _wd, mask, _cookie, length = _EVENT.unpack_from(data)
            name = data[_EVENT.size : _EVENT.size + length].rstrip(b"\0").decode()
            seen.append(f"{name or '.'}:{mask:#x}")
            data = data[_EVENT.size + length :]
    finally:
        os.close(fd)


def store_object(site: Site, digest: str) -> Path:
    (path,) = [p for p in (site.home / "objects").rglob("*") if p.is_file() and digest in p.name]
    return path


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return make_site(tmp_path)


def safetensors_bytes() -> bytes:
    from safetensors.numpy import save

    return bytes(save({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}))


@pytest.mark.parametrize("copy", ["sealed_memfd", "unnamed_file"])
def test_safetensors_reopens_the_verified_copy_never_the_store(
    site: Site, copy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors import safe_open

    if copy == "unnamed_file":
        monkeypatch.setenv("APPLIANCE_SEAL_MAX", "0")  # above the RAM cap: an unnamed file
    site.ship({"w@1.0": safetensors_bytes()})
    with appliance.load("w", home=site.home) as art:
        assert art.to_dict()["copy"] == copy
        obj = store_object(site, art.digest)
        verified = os.fstat(art.fd)
        assert (verified.st_dev, verified.st_ino) != (obj.stat().st_dev, obj.stat().st_ino)
        with watch_opens(site.home / "objects") as opened:
            for name in (f"/proc/self/fd/{art.fd}", art.path):  # both names work
                with safe_open(name, framework="numpy") as f:
                    maps = Path("/proc/self/maps").read_text().splitlines()
                    mapped = [m for m in maps if m.split()[4] == str(verified.st_ino)]
                    assert mapped, "safetensors mapped something else than the verified copy"
                    assert not any(str(obj) in m for m in maps)
                    assert f.get_tensor("w").tolist() == [[0, 1, 2], [3, 4, 5]]
        assert opened == [], f"the store was opened while the loader ran: {opened}"


def test_the_watch_sees_an_open_of_the_store(site: Site) -> None:
    """The inotify check above can fail: a read of the store object is an event."""
    site.ship({"w@1.0": safetensors_bytes()})
    with appliance.load("w", home=site.home) as art:
        obj = store_object(site, art.digest)
    with watch_opens(site.home / "objects") as opened:
        obj.read_bytes()
    assert any(obj.name in e for e in opened), opened


def onnx_bytes() -> bytes:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    two = helper.make_tensor("two", TensorProto.FLOAT, [2], [2.0, 2.0])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["y"])], "g", [x], [y], [two])
    model = helper.make_model(graph, producer_name="appliance-test")
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def test_onnx_loads_from_the_verified_file_object(site: Site) -> None:
    onnx = pytest.importorskip("onnx")
    site.ship({"mul@1.0": onnx_bytes()})
    with appliance.load("mul", home=site.home) as art, watch_opens(site.home / "objects") as opened:
        # onnx.load reads f.name (an int for os.fdopen): open the /dev/fd name instead
        with open(art.path, "rb") as f:
            model = onnx.load(f)
        onnx.checker.check_model(model)
        assert [n.op_type for n in model.graph.node] == ["Mul"]
        assert onnx.load(art.path).graph.name == "g"  # or by the /dev/fd name
    assert opened == []


def test_torch_loads_a_state_dict_from_the_verified_file_object(site: Site) -> None:
    torch = pytest.importorskip("torch")
    import io

    buf = io.BytesIO()
    torch.save({"layer.weight": torch.arange(4.0).reshape(2, 2)}, buf)
    site.ship({"sd@1.0": buf.getvalue()})
    with appliance.load("sd", home=site.home) as art, watch_opens(site.home / "objects") as opened:
        with open(art.path, "rb") as f:  # a new open file: offset 0
            state = torch.load(f, weights_only=True)
        with os.fdopen(os.dup(art.fd), "rb") as f:  # a dup shares the offset: seek first
            f.seek(0)
            again = torch.load(f, weights_only=True)
    assert state["layer.weight"].tolist() == [[0.0, 1.0], [2.0, 3.0]]
    assert again["layer.weight"].equal(state["layer.weight"])
    assert opened == []


def test_exec_hands_a_path_taking_server_the_verified_descriptor(site: Site) -> None:
    site.ship({"w@1.0": safetensors_bytes()})
    server = (
        "import sys; from safetensors.numpy import load_file; "
        "print(load_file(sys.argv[1])['w'].sum(), sys.argv[1].startswith('/dev/fd/'))"
    )
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance",
            "--home",
            str(site.home),
            "exec",
            "w",
            "--",
            sys.executable,
            "-c",
            server,
            "{}",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["15.0", "True"]
