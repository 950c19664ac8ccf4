"""``bundle create`` shares its small sources with one forked helper
(``bundles.writer_copy``, ``bundles.helper_batches``); whatever the helper meets, the
bundle is the one the sources give, or the refusal is this process's.

* Many small sources: the helper writes part of them, every file holds its source's
  bytes, and the manifest's digests are those of the sources (the bundle verifies).
* A source changed under the helper: ``source_changed``, as without a helper, and no
  bundle at OUT.
* A helper that dies after writing files it never reported: this process writes those
  sources again, over what the helper left, and the bundle is whole.
* A report of any other shape is not taken (``_decode``): written here again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import blake3
import pytest
from conformance.driver import make_key, resolver_for
from test_writer import _create

import bundles.helper_batches as helper_batches
import bundles.writer_copy as writer_copy
from bundles.errors import SourceChangedError
from bundles.manifest import Part
from bundles.reader import open_bundle, verify_artifacts
from bundles.writer import ArtifactSpec

N = 600  # several batches each (64 a batch; a helper from 256)


def _sources(tmp_path: Path) -> tuple[list[ArtifactSpec], dict[str, bytes]]:
    src = tmp_path / "src"
    src.mkdir()
    specs, data = [], {}
    for i in range(N):
        name = f"a{i:04d}"
        body = os.urandom(100 + i)
        (src / name).write_bytes(body)
        specs.append(ArtifactSpec(name, "1", src / name))
        data[name] = body
    return specs, data


def _here_slowly(monkeypatch: pytest.MonkeyPatch, then: Any = None) -> None:
    """This process writes slowly (so the helper takes batches); ``then(src, count)`` runs
    in the helper before each source it writes."""
    parent = os.getpid()
    real = writer_copy.write_source
    count = [0]

    def write(root: int, src: Any, replace: bool = False) -> Any:
        if os.getpid() == parent:
            import time

            time.sleep(0.001)
        elif then is not None:
            count[0] += 1
            then(src, count[0])
        return real(root, src, replace)

    monkeypatch.setattr(writer_copy, "write_source", write)


def _check_bundle(out: Path, data: dict[str, bytes], key: Any) -> None:
    """Every file holds its source's bytes, the signed digests are theirs, and the
    reader's own check of every artifact passes."""
    bundle = open_bundle(out, resolver_for(key))
    names = {a.name: a for a in bundle.manifest.artifacts}
    assert set(names) == set(data)
    for name, body in data.items():
        assert names[name].blake3 == blake3.blake3(body).hexdigest()
        assert (out / names[name].files[0].path).read_bytes() == body
    verify_artifacts(bundle)


def test_the_helper_writes_part_of_the_sources(
    tmp_path: Path, helper_counters: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    specs, data = _sources(tmp_path)
    key = make_key()
    _here_slowly(monkeypatch)
    _create(tmp_path / "out", specs, key)
    assert helper_counters["helpers"] == 1 and 0 < helper_counters["by_helper"] < N
    _check_bundle(tmp_path / "out", data, key)


def test_a_source_changed_under_the_helper_is_refused(
    tmp_path: Path, helper_counters: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    specs, _ = _sources(tmp_path)

    def grow(src: Any, count: int) -> None:
        if count == 3:
            with open(src.path, "ab") as f:  # after it was named, before it is written
                f.write(b"more")

    _here_slowly(monkeypatch, grow)
    with pytest.raises(SourceChangedError) as exc:
        _create(tmp_path / "out", specs, make_key())
    assert exc.value.code == "source_changed"
    assert helper_counters["helpers"] == 1
    assert not (tmp_path / "out").exists()
    assert sorted(os.listdir(tmp_path)) == ["src"]  # no temporary folder left either


def test_a_helper_that_dies_leaves_its_sources_to_be_written_here(
    tmp_path: Path, helper_counters: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    specs, data = _sources(tmp_path)
    real = writer_copy.write_source

    def die_after_writing(src: Any, count: int) -> None:
        if count == 10:  # this one's files are written, then the helper ends unreported
            real(_ROOT[0], src)
            os._exit(1)

    _ROOT: list[int] = []
    real_small = writer_copy._write_small

    def keep_root(root: int, sources: list[Any]) -> Any:
        _ROOT.append(root)
        return real_small(root, sources)

    monkeypatch.setattr(writer_copy, "_write_small", keep_root)
    _here_slowly(monkeypatch, die_after_writing)
    key = make_key()
    _create(tmp_path / "out", specs, key)
    assert helper_counters["helpers"] == 1
    _check_bundle(tmp_path / "out", data, key)


def test_a_report_of_another_shape_is_written_here_again(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    src = writer_copy.Source(path, path.stat(), (Part("artifacts/f", 10),))
    hex64 = "a" * 64
    assert writer_copy._decode([hex64, None, 10], src) == writer_copy.Digests(hex64, None, 10)
    for entry in (
        [hex64, None, 11],  # another size
        [hex64, hex64, 10],  # a SHA-256 nobody asked for
        ["A" * 64, None, 10],
        [hex64[:-1], None, 10],
        [hex64, None, True],
        [hex64, None],
        {"blake3": hex64},
        None,
    ):
        assert writer_copy._decode(entry, src) is helper_batches.NOT_USABLE
    with_sha = writer_copy.Source(path, path.stat(), src.files, sha256=True)
    assert writer_copy._decode([hex64, None, 10], with_sha) is helper_batches.NOT_USABLE
    assert writer_copy._decode([hex64, hex64, 10], with_sha) == writer_copy.Digests(
        hex64, hex64, 10
    )
