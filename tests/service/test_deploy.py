"""deploy/: the systemd units are valid (``systemd-analyze verify``) and hardened."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ANALYZE = shutil.which("systemd-analyze")


def _directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z]+)=(.*)$", line.strip())
        if m:
            out.setdefault(m.group(1), []).append(m.group(2))
    return out


def _units(tmp: Path) -> tuple[Path, Path]:
    """The units with ExecStart pointing at this checkout's entry point (verify checks it)."""
    exe = Path(sys.executable).with_name("appliance")
    service = tmp / "appliance.service"
    service.write_text(
        (DEPLOY / "appliance.service").read_text().replace("/usr/local/bin/appliance", str(exe))
    )
    socket = tmp / "appliance.socket"
    socket.write_text((DEPLOY / "appliance.socket").read_text())
    return socket, service


def test_service_unit_has_the_hardening_a_reviewer_expects():
    d = _directives((DEPLOY / "appliance.service").read_text())
    expect = {
        "User": ["appliance"],
        "NoNewPrivileges": ["yes"],
        "ProtectSystem": ["strict"],
        "ReadWritePaths": ["/var/lib/appliance"],
        "PrivateTmp": ["yes"],
        "CapabilityBoundingSet": [""],
        "AmbientCapabilities": [""],
        "PrivateNetwork": ["yes"],
        "RestrictAddressFamilies": ["AF_UNIX"],
        "ProtectHome": ["yes"],
    }
    for key, value in expect.items():
        assert d.get(key) == value, key
    s = _directives((DEPLOY / "appliance.socket").read_text())
    assert s["ListenStream"] == ["/run/appliance/appliance.sock"]
    assert s["Accept"] == ["no"]


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify(tmp_path: Path):
    assert ANALYZE is not None
    socket, service = _units(tmp_path)
    res = subprocess.run(
        [ANALYZE, "verify", str(socket), str(service)], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert "Unknown" not in res.stderr and "ignoring" not in res.stderr.lower(), res.stderr


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_security_rates_the_service_safe(tmp_path: Path):
    assert ANALYZE is not None
    _, service = _units(tmp_path)
    res = subprocess.run(
        [ANALYZE, "security", "--offline=yes", str(service)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    m = re.search(r"Overall exposure level for appliance.service: ([0-9.]+)", res.stdout)
    if m is None:
        pytest.skip(f"this systemd-analyze has no offline security mode: {res.stderr[:200]}")
    assert float(m.group(1)) <= 1.5, res.stdout[-2000:]
