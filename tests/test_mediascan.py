"""``appliance media``: removable media from a fake /proc and /sys, and --media folders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from conformance.driver import (
    cli_argv,
    cli_env,
    make_key,
    pack_tar,
    parse_output,
    write_bundle,
    write_sources,
)

from appliance.mediascan import Mount, is_removable, parse_mountinfo, scan, unescape
from bundles.timeutil import utcnow

KEY = make_key()


def make_bundle(out: Path, stream: str = "models", sequence: int = 7, count: int = 2) -> Path:
    src = out.parent / f".{out.name}.src"
    specs = write_sources(src, [(f"art{i}@1", os.urandom(100 + i)) for i in range(count)])
    expires = utcnow() + timedelta(days=1)
    write_bundle(out, specs, [KEY], stream=stream, sequence=sequence, expires=expires)
    shutil.rmtree(src)
    return out


def tree_state(root: Path) -> list[tuple[str, int, int, int]]:
    """Every entry under root: (path, mode, size, mtime_ns), links not followed."""
    out = []
    for dirpath, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            st = os.lstat(os.path.join(dirpath, name))
            out.append((os.path.join(dirpath, name), st.st_mode, st.st_size, st.st_mtime_ns))
    return sorted(out)


# --- mountinfo parsing ---------------------------------------------------------------

MOUNTINFO = (
    "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
    "40 27 8:17 / /media/USB\\040STICK rw,nosuid shared:12 master:3 - vfat /dev/sdb1 rw\n"
    "41 27 8:32 / /media/whole\\011disk rw - exfat /dev/sdc rw\n"
    "garbage line without separator\n"
    "42 27 0:50 / /run/user tmpfs - tmpfs tmpfs rw\n"
    "\n"
    "43 27 8:17 / /media/caf\\303\\251\\134x rw - vfat /dev/sdb1 rw\n"
)


def test_parse_mountinfo_fields_and_escapes() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert [m.mount_point for m in mounts] == [
        "/",
        "/media/USB STICK",
        "/media/whole\tdisk",
        "/run/user",
        "/media/café\\x",
    ]
    usb = mounts[1]
    assert (usb.source, usb.fstype, usb.device) == ("/dev/sdb1", "vfat", "8:17")


def test_unescape_leaves_non_escapes_alone() -> None:
    assert unescape("a\\040b") == "a b"
    assert unescape("a\\9999") == "a\\9999"
    assert unescape("end\\04") == "end\\04"
    assert unescape("plain") == "plain"


# --- a fake /sys ---------------------------------------------------------------------


def fake_sys(root: Path) -> Path:
    """sdb (removable, partition sdb1), sdc (removable, no partitions), vda (fixed)."""
    sys_root = root / "sys"
    devices = sys_root / "devices" / "pci0000:00" / "usb1" / "block"
    for disk, removable in (("sdb", "1"), ("sdc", "1"), ("vda", "0"), ("loop3", "0")):
        d = devices / disk
        d.mkdir(parents=True)
        (d / "removable").write_text(removable + "\n")
    (devices / "loop3" / "loop").mkdir()  # what the kernel shows for a loop device
    (devices / "sdb" / "sdb1").mkdir()
    (devices / "sdb" / "sdb1" / "partition").write_text("1\n")
    (devices / "vda" / "vda1").mkdir()
    (devices / "vda" / "vda1" / "partition").write_text("1\n")
    cls = sys_root / "class" / "block"
    cls.mkdir(parents=True)
    blk = sys_root / "block"
    blk.mkdir()
    devblock = sys_root / "dev" / "block"
    devblock.mkdir(parents=True)
    for name, rel in (
        ("sdb", "sdb"),
        ("sdb1", "sdb/sdb1"),
        ("sdc", "sdc"),
        ("vda", "vda"),
        ("vda1", "vda/vda1"),
        ("loop3", "loop3"),
    ):
        os.symlink(os.path.relpath(devices / rel, cls), cls / name)
    for disk in ("sdb", "sdc", "vda", "loop3"):
        os.symlink(os.path.relpath(devices / disk, blk), blk / disk)
    for num, rel in (
        ("8:17", "sdb/sdb1"),
        ("8:32", "sdc"),
        ("254:1", "vda/vda1"),
        ("7:3", "loop3"),
    ):
        os.symlink(os.path.relpath(devices / rel, devblock), devblock / num)
    return sys_root


def test_partition_maps_to_its_removable_disk(tmp_path: Path) -> None:
    sys_root = fake_sys(tmp_path)
    assert is_removable(Mount("/m", "/dev/sdb1", "vfat", "8:17"), sys_root)
    assert is_removable(Mount("/m", "/dev/sdc", "exfat", "8:32"), sys_root)
    assert not is_removable(Mount("/m", "/dev/vda1", "ext4", "254:1"), sys_root)
    # By name alone (device number unknown to sysfs), the partition still maps to its disk.
    assert is_removable(Mount("/m", "/dev/sdb1", "vfat", "99:99"), sys_root)
    assert not is_removable(Mount("/m", "tmpfs", "tmpfs", "0:50"), sys_root)
    assert not is_removable(Mount("/m", "/dev/../../etc", "x", "0:51"), sys_root)


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """A fake /sys, a mountinfo naming real folders, and the media contents."""
    sys_root = fake_sys(tmp_path)
    usb = tmp_path / "media" / "USB STICK"
    disk = tmp_path / "media" / "whole disk"
    fixed = tmp_path / "srv"
    for d in (usb, disk, fixed):
        d.mkdir(parents=True)
    good = make_bundle(usb / "release-7", sequence=7, count=3)
    pack_tar(usb / "release-7.tar", good)
    make_bundle(usb / "tools-2", stream="tools", sequence=2, count=1)
    broken = usb / "broken"
    broken.mkdir()
    (broken / "manifest.dsse.json").write_text("{not json")
    linked = make_bundle(usb / "linked", sequence=9)
    os.symlink("/etc/passwd", linked / "evil")  # a symlink inside a bundle: refused
    (usb / "notes").mkdir()  # no manifest: not a bundle
    (usb / "readme.txt").write_text("hello")
    (usb / "fake.tar").write_bytes(b"this is not a tar archive at all" * 40)
    outside = make_bundle(tmp_path / "outside-bundle", sequence=99)
    os.symlink(outside, usb / "symlinked-dir")  # never followed out of the medium
    pack_tar(tmp_path / "outside.tar", outside)
    os.symlink(tmp_path / "outside.tar", usb / "symlinked.tar")
    make_bundle(fixed / "on-fixed-disk")
    esc = str(usb).replace(" ", "\\040")
    esc_disk = str(disk).replace(" ", "\\040")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "27 1 254:0 / / rw - ext4 /dev/vda rw\n"
        f"40 27 8:17 / {esc} rw,nosuid shared:12 - vfat /dev/sdb1 rw\n"
        f"41 27 8:32 / {esc_disk} rw - exfat /dev/sdc rw\n"
        f"42 27 254:1 / {fixed} rw - ext4 /dev/vda1 rw\n"
    )
    return mountinfo, sys_root, usb, disk


def test_scan_lists_removable_media_and_their_bundles(
    world: tuple[Path, Path, Path, Path],
) -> None:
    mountinfo, sys_root, usb, disk = world
    before = tree_state(usb.parent)
    media = scan(mountinfo=mountinfo, sys_root=sys_root)
    assert [(m.path, m.removable, m.source) for m in media] == [
        (str(usb), True, "/dev/sdb1"),
        (str(disk), True, "/dev/sdc"),
    ]
    found = {Path(b.path).name: b.to_dict() for b in media[0].bundles}
    assert set(found) == {"broken", "fake.tar", "linked", "release-7", "release-7.tar", "tools-2"}
    assert found["release-7"] == {
        "path": str(usb / "release-7"),
        "format": "dir",
        "stream": "models",
        "sequence": 7,
        "artifacts": 3,
        "not_read": None,
        "verified": False,
        "error": None,
    }
    assert (found["release-7.tar"]["format"], found["release-7.tar"]["artifacts"]) == ("tar", 3)
    assert (found["tools-2"]["stream"], found["tools-2"]["sequence"]) == ("tools", 2)
    assert found["broken"]["error"]["code"] == "malformed_envelope"
    assert found["broken"]["stream"] is None
    assert found["linked"]["error"]["code"] == "archive_link"
    assert found["fake.tar"]["error"]["code"] == "not_a_bundle"
    assert media[1].bundles == ()
    assert tree_state(usb.parent) == before  # nothing written, not even a timestamp moved


def test_loop_device_counts_as_media_under_media_or_run_media(tmp_path: Path) -> None:
    sys_root = fake_sys(tmp_path)
    assert is_removable(Mount("/media/ann/IMAGE", "/dev/loop3", "vfat", "7:3"), sys_root)
    assert is_removable(Mount("/run/media/ann/IMAGE", "/dev/loop3", "vfat", "7:3"), sys_root)
    # a loop device elsewhere (a snap, a container image) is not media
    assert not is_removable(Mount("/snap/core/1", "/dev/loop3", "squashfs", "7:3"), sys_root)
    assert not is_removable(Mount("/mediaX/a", "/dev/loop3", "vfat", "7:3"), sys_root)


def test_upper_case_tar_on_fat_and_dot_files(tmp_path: Path) -> None:
    stick = tmp_path / "stick"
    stick.mkdir()
    good = make_bundle(tmp_path / "b", sequence=4)
    pack_tar(stick / "MODELS.TAR", good)
    (stick / "._MODELS.TAR").write_bytes(b"\x00\x05\x16\x07 AppleDouble" * 10)
    make_bundle(stick / ".Trashes", sequence=5)
    (stick / "AUTH.JSON").write_text("{}")
    (stick / ".hidden.json").write_text("{}")
    [medium] = scan([stick], auto=False)
    assert [(b.name, b.format, b.sequence) for b in medium.bundles] == [("MODELS.TAR", "tar", 4)]
    assert medium.documents == (str(stick / "AUTH.JSON"),)


def test_large_manifests_are_not_read_by_a_scan_and_the_cache_rereads_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stick of large unsigned manifests: each is left to the review, never parsed here."""
    from appliance import mediascan

    stick = tmp_path / "stick"
    stick.mkdir()
    for i in range(5):
        big = stick / f"junk-{i}"
        big.mkdir()
        (big / "manifest.dsse.json").write_bytes(b" " * (mediascan.MAX_LISTED_MANIFEST + 1))
    for i in range(3):
        make_bundle(stick / f"real-{i}", sequence=i + 1)
    reads: list[str] = []
    real_read = mediascan._read_entry

    def counting(path: str, fmt: str) -> mediascan.BundleEntry:
        reads.append(path)
        return real_read(path, fmt)

    monkeypatch.setattr(mediascan, "_read_entry", counting)
    cache = mediascan.ScanCache()
    [medium] = scan([stick], auto=False, cache=cache)
    junk = [b for b in medium.bundles if b.name.startswith("junk")]
    assert len(junk) == 5 and all(b.not_read and b.error is None for b in junk)
    assert len(reads) == 3  # only the three small manifests were opened
    [again] = scan([stick], auto=False, cache=cache)
    assert again == medium and len(reads) == 3  # a poll with nothing changed reads nothing
    (stick / "real-0" / "manifest.dsse.json").touch()
    scan([stick], auto=False, cache=cache)
    assert len(reads) == 4  # one changed manifest: one read


def test_scan_budget_bounds_one_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from appliance import mediascan

    stick = tmp_path / "stick"
    stick.mkdir()
    for i in range(4):
        make_bundle(stick / f"b{i}", sequence=i + 1)
    size = (stick / "b0" / "manifest.dsse.json").stat().st_size
    monkeypatch.setattr(mediascan, "SCAN_BUDGET", 2 * size + size // 2)
    cache = mediascan.ScanCache()
    [first] = scan([stick], auto=False, cache=cache)
    assert [b.not_read is None for b in first.bundles] == [True, True, False, False]
    [second] = scan([stick], auto=False, cache=cache)  # the next poll reads the rest
    assert all(b.not_read is None for b in second.bundles)


def test_json_output_is_utf8_whatever_bytes_names_hold(tmp_path: Path) -> None:
    stick = tmp_path / "stick"
    stick.mkdir()
    make_bundle(stick / "ok", sequence=2)
    os.mkdir(os.fsencode(stick) + b"/bad-\xff\x1b[31m")
    (
        Path(os.fsdecode(os.fsencode(stick) + b"/bad-\xff\x1b[31m")) / "manifest.dsse.json"
    ).write_text("{")
    argv = cli_argv(tmp_path / "unused-home", "--json", "media", "--media", stick)
    proc = subprocess.run(argv, capture_output=True, env=cli_env(), check=False)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout.decode("utf-8"))  # strict UTF-8
    names = [b["path"].rsplit("/", 1)[1] for b in doc["media"][0]["bundles"]]
    assert names == ["bad-\\xff\x1b[31m", "ok"]
    human = subprocess.run(
        [sys.executable, "-m", "appliance", "media", "--media", str(stick)],
        capture_output=True,
        env=cli_env(),
        check=False,
    )
    assert human.returncode == 0
    assert b"\x1b" not in human.stdout  # escape sequences from names never reach a terminal


def test_media_folder_given_twice_or_also_mounted_is_listed_once(
    world: tuple[Path, Path, Path, Path],
) -> None:
    mountinfo, sys_root, usb, _disk = world
    media = scan([usb, str(usb) + "/"], mountinfo=mountinfo, sys_root=sys_root)
    assert [m.path for m in media].count(str(usb)) == 1


def test_mounted_over_by_a_fixed_disk_is_not_removable(tmp_path: Path) -> None:
    sys_root = fake_sys(tmp_path)
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "40 1 8:17 / /mnt rw - vfat /dev/sdb1 rw\n41 40 254:1 / /mnt rw - ext4 /dev/vda1 rw\n"
    )
    assert scan(mountinfo=mountinfo, sys_root=sys_root) == []


def test_unreadable_mountinfo_means_no_removable_media(tmp_path: Path) -> None:
    assert scan(mountinfo=tmp_path / "absent", sys_root=tmp_path / "nosys") == []


# --- the CLI ---------------------------------------------------------------------------


def media_cli(tmp_path: Path, *args: str | Path) -> tuple[int, dict[str, object]]:
    argv = cli_argv(tmp_path / "unused-home", "media", *args)
    proc = subprocess.run(argv, capture_output=True, text=True, env=cli_env(), check=False)
    return proc.returncode, parse_output(proc.returncode, proc.stdout, proc.stderr, argv)


def test_cli_media_folders(tmp_path: Path) -> None:
    stick = tmp_path / "stick"
    stick.mkdir()
    make_bundle(stick / "b1", sequence=3, count=2)
    pack_tar(stick / "b1.tar", stick / "b1")
    (stick / "empty").mkdir()
    other = tmp_path / "other"
    other.mkdir()
    before = tree_state(tmp_path)
    rc, doc = media_cli(tmp_path, "--media", stick, "--media", other)
    assert rc == 0 and doc["ok"] is True
    media = doc["media"]
    assert isinstance(media, list)
    mine = [m for m in media if not m["removable"]]
    assert [(m["path"], m["source"]) for m in mine] == [
        (str(stick), "--media"),
        (str(other), "--media"),
    ]
    assert [
        (b["path"], b["format"], b["stream"], b["sequence"], b["artifacts"], b["verified"])
        for b in mine[0]["bundles"]
    ] == [
        (str(stick / "b1"), "dir", "models", 3, 2, False),
        (str(stick / "b1.tar"), "tar", "models", 3, 2, False),
    ]
    assert mine[1]["bundles"] == []
    assert tree_state(tmp_path) == before


def test_cli_media_folder_that_is_absent_is_exit_3(tmp_path: Path) -> None:
    rc, doc = media_cli(tmp_path, "--media", tmp_path / "gone")
    assert rc == 3 and doc["ok"] is False
    assert doc["error"]["code"] == "bundle_not_found"  # type: ignore[index]


def test_cli_media_human_output_says_unverified(tmp_path: Path) -> None:
    stick = tmp_path / "stick"
    stick.mkdir()
    make_bundle(stick / "b1")
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", "media", "--media", str(stick)],
        capture_output=True,
        text=True,
        env=cli_env(),
        check=False,
    )
    assert proc.returncode == 0
    assert "UNVERIFIED" in proc.stdout


def test_names_sort_naturally(tmp_path: Path) -> None:
    from appliance.mediascan import natural_key

    names = ["models-10", "models-6", "Models-7", "models-6a", "tools-2"]
    assert sorted(names, key=natural_key) == [
        "models-6",
        "models-6a",
        "Models-7",
        "models-10",
        "tools-2",
    ]
    stick = tmp_path / "stick"
    stick.mkdir()
    for n in (10, 6, 9):
        make_bundle(stick / f"models-{n}", sequence=n)
    [medium] = scan([stick], auto=False)
    assert [b.name for b in medium.bundles] == ["models-6", "models-9", "models-10"]
