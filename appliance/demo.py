"""``appliance demo``: the whole story in a throwaway home, in about a second.

In a temporary folder: throwaway root, publisher and rollback keys; a home
(site ``demo-site``, with a state witness); bundles v1 (carrying the trust
update that adds the publisher and rollback keys) and v2 signed onto a folder
standing for removable media; both imported; a verified load; the replayed v1
refused; a store object tampered (made writable, one byte flipped) and caught
on load, then restored; a rollback signed by a publisher key refused; an
authorized rollback to v1 whose first load is verified in full; then the
loader service (issue 11): the home closed to other users, a root-signed grant
for a throwaway loader user, ``appliance serve`` (in this process) handing that
user the verified bytes over a Unix socket while its direct read of the home
gets EACCES, and a second, ungranted user refused (``loader_not_authorized``).
The two users are created and removed when the demo runs as root; otherwise
those steps say why they are skipped. Last, the audit chain is verified.
Each step says what it did and how it came out; the demo
passes only if every step behaved as expected (each "should be refused" step
refused with the expected code).

Everything goes through the Python API, except the loaders of the service
steps, which are separate processes running as the throwaway users.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from appliance import audit, witness
from appliance.errors import ApplianceError, DemoUnexpectedError, LoaderNotAuthorizedError
from appliance.home import Home
from appliance.importer import import_bundle
from appliance.initialize import init_home
from appliance.loader import load
from appliance.rollback import apply_rollback, authorize_rollback
from appliance.store import clear_immutable, find, object_path
from bundles.documents import TRUST_PAYLOAD_TYPE, AddKey, AllowLoader, TrustUpdate
from bundles.dsse import sign_envelope
from bundles.keys import PrivateKey, save_keypair
from bundles.timeutil import utcnow
from bundles.writer import ArtifactSpec, create_bundle

__all__ = ["DemoResult", "DemoStep", "run_demo"]

STREAM = "models"
SITE = "demo-site"
WEIGHTS = {
    "1.0": b"demo model weights, release 1.0\n" * 64,
    "2.0": b"demo model weights, release 2.0 (the one that misbehaves)\n" * 64,
}


def _others_can_reach(path: Path) -> bool:
    """Every folder from / to ``path`` lets other users through (o+x), links resolved (a
    venv's ``bin/python`` is a link to an interpreter that may sit in a closed folder,
    ``/root/.pyenv`` say), and a file there is one they may run (o+x)."""
    path = Path(os.path.realpath(path))
    for p in [path, *path.parents]:
        if not os.stat(p).st_mode & 0o001:
            return False
    return True


def _loader_can_run(here: Path) -> bool:
    """A loader user can start this program: the interpreter, its standard library and
    the folder the product is imported from (or the frozen binary) are open to them."""
    if getattr(sys, "frozen", False):
        return _others_can_reach(Path(sys.executable))
    paths = (Path(sys.executable), Path(sys.base_prefix), here)
    return all(_others_can_reach(p) for p in paths)


class _Skipped(Exception):
    """A step that cannot run here (the service steps without root); says why."""


@dataclass(frozen=True)
class DemoStep:
    number: int
    title: str
    expected: str  # "ok" or the error code that should refuse it
    outcome: str  # "ok" or the error code that happened
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.number,
            "title": self.title,
            "expected": self.expected,
            "outcome": self.outcome,
            "ok": self.ok,
            "detail": self.detail,
        }


@dataclass
class DemoResult:
    workdir: Path
    home: Path
    media: Path
    witness: Path
    steps: list[DemoStep] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.ok,
            "home": str(self.home),
            "media": str(self.media),
            "steps": [s.to_dict() for s in self.steps],
        }


class _Story:
    def __init__(self, workdir: Path, say: Callable[[str], None]) -> None:
        self.say = say
        self.result = DemoResult(
            workdir, workdir / "home", workdir / "usb", workdir / "witness" / "witness.json"
        )
        self.home = Home(self.result.home)
        self.note = ""
        self.users: list[str] = []

    def step(self, title: str, action: Callable[[], str], expect: str | None = None) -> None:
        number = len(self.result.steps) + 1
        self.note = ""
        try:
            detail = action()
            outcome = "ok"
        except ApplianceError as e:
            outcome, detail = e.code, e.message
        except _Skipped as e:
            outcome, detail, expect = "skipped", str(e), "skipped"
        expected = expect or "ok"
        ok = outcome == expected
        if self.note:
            detail = f"{self.note}; {detail}"
        self.result.steps.append(DemoStep(number, title, expected, outcome, ok, detail))
        if expect == "skipped":
            verdict = "skipped"
        elif expect is None:
            verdict = "ok" if ok else f"FAILED [{outcome}]"
        else:
            verdict = (
                f"refused as expected [{outcome}]" if ok else f"NOT refused as expected ({outcome})"
            )
        self.say(f"{number:>2}. {title}: {verdict}")
        self.say(f"    {detail}")

    # --- the steps ------------------------------------------------------------

    def make_keys(self) -> str:
        self.keys = {n: PrivateKey.generate() for n in ("root", "publisher", "rollback")}
        for n, k in self.keys.items():
            save_keypair(k, self.result.workdir / "keys", n)
        ids = ", ".join(f"{n} {k.keyid[:12]}" for n, k in self.keys.items())
        return f"throwaway Ed25519 keys: {ids}"

    def init(self) -> str:
        # A throwaway home gets a throwaway trust anchor (never one under /etc/appliance).
        anchor = self.result.workdir / "anchor" / "anchor.json"
        os.environ["APPLIANCE_ANCHOR"] = str(anchor)
        init_home(self.home, [self.keys["root"].public], 1, SITE, self.result.witness, anchor)
        return (
            f"home {self.home.root}, site {SITE}, state witness {self.result.witness}, "
            f"trust anchor {anchor}"
        )

    def sign_bundles(self) -> str:
        update = TrustUpdate(
            2,
            utcnow(),
            (
                AddKey(self.keys["publisher"].public, "publisher", STREAM),
                AddKey(self.keys["rollback"].public, "rollback", None),
            ),
        )
        trust = sign_envelope(TRUST_PAYLOAD_TYPE, update.to_payload(), [self.keys["root"]])
        src = self.result.workdir / "src"
        src.mkdir()
        self.result.media.mkdir()
        for seq, version in enumerate(WEIGHTS, start=1):
            path = src / f"model-{version}.bin"
            path.write_bytes(WEIGHTS[version])
            create_bundle(
                self.result.media / f"bundle-v{version}",
                [ArtifactSpec("model", version, path)],
                stream=STREAM,
                sequence=seq,
                keys=[self.keys["publisher"]],
                expires=utcnow() + timedelta(days=30),
                sites=[SITE],
                trust_updates=[trust.to_bytes()] if seq == 1 else [],
            )
        return (
            f"bundle-v1.0 (sequence 1, carries trust update 2 adding the publisher and "
            f"rollback keys) and bundle-v2.0 (sequence 2) written to {self.result.media}"
        )

    def import_(self, version: str) -> str:
        r = import_bundle(self.home, self.result.media / f"bundle-v{version}")
        extra = f"; trust updates applied: {r.trust_updates}" if r.trust_updates else ""
        return (
            f"model@{version} verified ({r.bytes_verified} B, BLAKE3) and stored; "
            f"sequence {r.sequence} is now the high-water mark{extra}"
        )

    def load(self, version: str) -> str:
        with load("model", home=self.home) as art:
            if art.version != version or art.read() != WEIGHTS[version]:
                raise DemoUnexpectedError(
                    f"load returned {art.name}@{art.version}, not the signed bytes"
                )
            return (
                f"model@{art.version}: {art.size} B re-hashed from a sealed copy, BLAKE3 "
                f"{art.digest[:16]} matches, signers meet today's trust; fd {art.fd} handed over"
            )

    def replay(self) -> str:
        import_bundle(self.home, self.result.media / "bundle-v1.0")
        return "the old bundle was accepted again"

    def _object(self, version: str) -> Path:
        db = self.home.db()
        try:
            return object_path(self.home, find(db, "model", version).digest)
        finally:
            db.conn.close()

    def tamper(self) -> str:
        path = self._object("2.0")
        # Objects may carry the immutable inode flag; the demo plays an attacker who could
        # clear it (root) to show that the load still catches the change.
        clear_immutable(path)
        os.chmod(path, 0o644)
        with open(path, "r+b") as f:
            f.seek(100)
            byte = f.read(1)
            f.seek(100)
            f.write(bytes([byte[0] ^ 0x01]))
        os.chmod(path, 0o444)
        self.note = f"made object {path.name[:16]}... writable, flipped one bit of byte 100"
        with load("model", home=self.home):
            return "the tampered object loaded"

    def restore(self) -> str:
        path = self._object("2.0")
        os.chmod(path, 0o644)
        with open(path, "r+b") as f:
            f.seek(100)
            f.write(WEIGHTS["2.0"][100:101])
        os.chmod(path, 0o444)
        return "restored the flipped byte; " + self.load("2.0")

    def _authorization(self, key: str, name: str) -> bytes:
        path = self.result.media / f"{name}.json"
        _, data = authorize_rollback(
            path,
            "model",
            "1.0",
            [self.keys[key]],
            reason="2.0 misbehaves in production; back to 1.0",
            sites=(SITE,),
        )
        return data

    def rollback_by_publisher(self) -> str:
        apply_rollback(
            self.home, "model", self._authorization("publisher", "rollback-by-publisher")
        )
        return "a publisher key moved the active version"

    def rollback(self) -> str:
        data = self._authorization("rollback", "rollback-authorization")
        r = apply_rollback(self.home, "model", data, source="rollback-authorization.json")
        return (
            f"active version {r.from_version} -> {r.to_version}, authorized by rollback key "
            f"{r.authorized_by[0][:12]} ({r.reason}); authorization {r.authorization_id} used up"
        )

    # --- the loader service (issue 11) ----------------------------------------

    def _user(self, prefix: str) -> str:
        name = f"{prefix}{secrets.token_hex(3)}"
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
        self.users.append(name)
        return name

    def _as_user(self, user: str, *args: str) -> subprocess.CompletedProcess[bytes]:
        """``appliance ARGS`` as ``user`` (the frozen binary is its own entry point)."""
        pw = pwd.getpwnam(user)
        frozen = getattr(sys, "frozen", False)
        cmd = [sys.executable, *([] if frozen else ["-m", "appliance"]), *args]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/"}
        env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
        return subprocess.run(
            cmd, env=env, cwd="/", capture_output=True, timeout=60,
            user=pw.pw_uid, group=pw.pw_gid, extra_groups=[],
        )  # fmt: skip

    def service_start(self) -> str:
        if os.geteuid() != 0:
            raise _Skipped(
                "skipped: creating throwaway loader users needs root (run the demo as root "
                "to see a loader user served and an ungranted one refused)"
            )
        here = Path(__file__).resolve().parent.parent
        if not _loader_can_run(here):
            raise _Skipped(
                f"skipped: other users cannot reach {os.path.realpath(sys.executable)}, "
                f"{sys.base_prefix} or {here} (a folder on the way is closed to them), so "
                "a loader user could not run the client"
            )
        if shutil.which("useradd") is None or shutil.which("userdel") is None:
            raise _Skipped(
                "skipped: no useradd/userdel on this host (a minimal system or chroot), so "
                "no throwaway loader users can be made"
            )
        from appliance.importer import apply_trust_envelope
        from appliance.service.server import Config, Server, bind_socket
        from appliance.truststore import load_trust
        from bundles.dsse import Envelope

        self.loader = self._user("apdemo")
        self.stranger = self._user("apdemo")
        db = self.home.db()
        try:
            state = load_trust(db)
            update = TrustUpdate(
                state.version + 1, utcnow(), (AllowLoader(self.loader, STREAM, ("model",)),)
            )
            env = sign_envelope(TRUST_PAYLOAD_TYPE, update.to_payload(), [self.keys["root"]])
            apply_trust_envelope(db, state, Envelope.from_bytes(env.to_bytes()), "demo grant")
        finally:
            db.conn.close()
        os.chmod(self.home.root, 0o700)  # the home: closed to everyone but its owner
        # The socket in a folder every user can reach (the demo's own may sit in a closed one).
        self.run_dir = Path(tempfile.mkdtemp(prefix="appliance-demo-run-"))
        os.chmod(self.run_dir, 0o755)
        self.sock = self.run_dir / "appliance.sock"
        self.server = Server(Config(self.home, log=lambda _: None), [bind_socket(self.sock)])
        self.thread = threading.Thread(target=self.server.serve, daemon=True)
        self.thread.start()
        return (
            f"root-signed grant: loader {self.loader} may load model (stream {STREAM}, active "
            f"version); home closed (0700); appliance serve listening on {self.sock}"
        )

    def service_load(self) -> str:
        if not hasattr(self, "server"):
            raise _Skipped("skipped: no service (see the step before)")
        direct = self._as_user(self.loader, "--home", str(self.home.root), "--json", "list")
        if direct.returncode == 0:
            raise DemoUnexpectedError(f"{self.loader} could read the home directly")
        code = json.loads(direct.stdout or b"{}").get("error", {}).get("code")
        res = self._as_user(self.loader, "load", "model", "--socket", str(self.sock))
        if res.returncode != 0 or res.stdout != WEIGHTS["1.0"]:
            raise DemoUnexpectedError(f"{self.loader} was not served: {res.stderr.decode()[-300:]}")
        return (
            f"{self.loader}: 'appliance list' on the home directly fails ({code}: the home "
            "is 0700, the kernel refuses the path); through "
            f"the service it got model@1.0's {len(res.stdout)} signed bytes (sealed copy "
            "re-hashed by the service, the load audited with its uid and pid)"
        )

    def service_refuse(self) -> str:
        if not hasattr(self, "server"):
            raise _Skipped("skipped: no service (see the step before)")
        res = self._as_user(self.stranger, "load", "model", "--socket", str(self.sock))
        err = res.stderr.decode().strip().splitlines()
        line = err[-1] if err else ""
        if res.returncode == 1 and "[loader_not_authorized]" in line:
            raise LoaderNotAuthorizedError(line.partition(": error [loader_not_authorized]: ")[2])
        return f"{self.stranger} was not refused (exit {res.returncode}): {line}"

    def service_stop(self) -> None:
        if hasattr(self, "server"):
            self.server.stop()
            self.thread.join(timeout=30)
        if hasattr(self, "run_dir"):
            shutil.rmtree(self.run_dir, ignore_errors=True)
        for name in self.users:
            subprocess.run(["userdel", name], capture_output=True)

    def audit_verify(self) -> str:
        db = self.home.db()
        try:
            count, head = audit.verify_chain(db)
            status = witness.require_current(db, witness.configured_path(db, None)).status
        finally:
            db.conn.close()
        return f"{count} hash-chained events intact, head {head[:16]}; witness {status.value}"


def run_demo(workdir: Path, say: Callable[[str], None] = print) -> DemoResult:
    """Run the story in ``workdir`` (an empty folder the caller removes afterwards)."""
    saved = os.environ.get("APPLIANCE_ANCHOR")
    try:
        return _run(workdir, say)
    finally:
        # The caller removes ``workdir``: immutable objects (set where the process may) must
        # lose the flag first, or they could not be removed.
        for dirpath, _dirs, files in os.walk(workdir):
            for f in files:
                clear_immutable(Path(dirpath) / f)
        if saved is None:
            os.environ.pop("APPLIANCE_ANCHOR", None)
        else:
            os.environ["APPLIANCE_ANCHOR"] = saved


def _run(workdir: Path, say: Callable[[str], None]) -> DemoResult:
    s = _Story(workdir, say)
    s.step("make throwaway root, publisher and rollback keys", s.make_keys)
    s.step("initialise an appliance home", s.init)
    s.step("sign bundles v1 and v2 onto the 'USB stick'", s.sign_bundles)
    s.step("import bundle v1", lambda: s.import_("1.0"))
    s.step("import bundle v2", lambda: s.import_("2.0"))
    s.step("load model (verified on every load)", lambda: s.load("2.0"))
    s.step("replay the older bundle v1", s.replay, expect="sequence_older")
    s.step("tamper with the stored object of model@2.0, then load", s.tamper, "object_tampered")
    s.step("restore the object and load again", s.restore)
    s.step("roll back with an authorization signed by a publisher key", s.rollback_by_publisher,
           expect="key_not_authorized")  # fmt: skip
    s.step("authorized rollback to model@1.0", s.rollback)
    s.step("first load after the rollback", lambda: s.load("1.0"))
    try:
        s.step("loader service: grant a loader user, close the home, serve", s.service_start)
        s.step("a loader user loads through the service", s.service_load)
        s.step("an ungranted user asks the service", s.service_refuse, "loader_not_authorized")
    finally:
        s.service_stop()
    s.step("audit verify", s.audit_verify)
    return s.result
