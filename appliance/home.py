"""The appliance home: where state, objects and staging live, and the import lock.

A writer of the home may plant links and special files at any of its names, so
everything under it is reached by descriptor through ``appliance.safefs``, and
``Home.check`` refuses (``home_tampered``, exit 4) a home whose fixed parts are
links or of the wrong type before any command uses it.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from appliance import safefs
from appliance.errors import (
    AlreadyInitializedError,
    HomeTamperedError,
    IOFailedError,
    LockHeldError,
    NotInitializedError,
    PermissionDeniedError,
    ReadOnlyModeError,
)
from appliance.homepath import DB_FILE as DB_FILE
from appliance.homepath import default_home_path

if TYPE_CHECKING:  # sqlite3 loads with the database (``db``): not for ``--version``
    from appliance.db import Database

LOCK_FILE = "lock"
OBJECTS_DIR = "objects"
STAGING_DIR = "staging"
_INIT_PREFIX = f".{DB_FILE}.init."  # init's private folder (see Home.new_db_path)
# Files SQLite opens beside the database (a WAL-mode header would make it use the last two).
DB_FILES = (DB_FILE, f"{DB_FILE}-journal", f"{DB_FILE}-wal", f"{DB_FILE}-shm")


def default_home() -> Path:
    """``$APPLIANCE_HOME``, else ``/var/lib/appliance`` for root, else a per-user folder
    (``appliance.homepath.default_home_path``)."""
    return Path(default_home_path())


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def db_path(self) -> Path:
        return self.root / DB_FILE

    @property
    def objects(self) -> Path:
        return self.root / "objects"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def lock_path(self) -> Path:
        return self.root / "lock"

    def exists(self) -> bool:
        """Something is at ``appliance.db`` (a link counts: ``db`` then refuses it)."""
        try:
            os.lstat(self.db_path)
        except FileNotFoundError:
            return False
        except NotADirectoryError as e:  # --home names a file (or a path through one)
            raise IOFailedError(
                f"cannot use {self.root} as an appliance home: it is not a directory (a home "
                "is the folder that holds appliance.db)"
            ) from e
        except PermissionError as e:  # a home closed to this user (issue 11): not a bug
            raise PermissionDeniedError(
                f"cannot read the appliance home {self.root}: permission denied "
                "(loaders use the loader service: --socket or APPLIANCE_SOCKET)"
            ) from e
        return True

    def require(self) -> None:
        if not self.exists():
            raise NotInitializedError(
                f"{self.root} is not an initialised appliance home (run appliance init)"
            )

    def tampered(self, e: safefs.UnsafeEntryError, where: str = "") -> HomeTamperedError:
        return HomeTamperedError(
            f"home {self.root}: {where}{e}; refusing to use a home whose fixed parts were "
            "replaced (inspect it, then restore or re-create it)"
        )

    @contextmanager
    def root_fd(self) -> Iterator[int]:
        """A descriptor of the home's directory, for ``dir_fd=`` opens under it."""
        try:
            fd = safefs.open_root(self.root)
        except FileNotFoundError as e:
            raise NotInitializedError(f"{self.root} does not exist (run appliance init)") from e
        except OSError as e:
            raise IOFailedError(f"cannot open home {self.root}: {e.strerror}") from e
        try:
            yield fd
        finally:
            os.close(fd)

    @contextmanager
    def open_dir(self, name: str, *, create: int | None = None) -> Iterator[int | None]:
        """``objects`` or ``staging`` by descriptor, never through a link (None if absent)."""
        with self.root_fd() as root:
            try:
                fd = safefs.open_dir_at(root, name, create=create)
            except FileNotFoundError:
                yield None
                return
            except safefs.UnsafeEntryError as e:
                raise self.tampered(e) from e
            except OSError as e:
                raise IOFailedError(f"cannot open {self.root / name}: {e.strerror}") from e
            try:
                yield fd
            finally:
                os.close(fd)

    def check(self) -> None:
        """Refuse (``home_tampered``, exit 4) a home whose fixed parts are links or of the
        wrong type: the database and its journals and ``lock`` absent or regular files,
        ``objects``, every ``objects/xx`` and ``staging`` absent or real directories.
        Looks only, by descriptor; touches nothing.
        """
        with self.root_fd() as root:
            where = ""
            try:
                for name in (*DB_FILES, LOCK_FILE):
                    safefs.check_at(root, name, "regular file")
                safefs.check_at(root, STAGING_DIR, "directory")
                try:
                    objects = safefs.open_dir_at(root, OBJECTS_DIR)
                except FileNotFoundError:
                    return
                where = f"{OBJECTS_DIR}/"
                try:
                    for name, is_dir in safefs.entries(objects):
                        if not is_dir:
                            safefs.check_at(objects, name, "directory")
                finally:
                    os.close(objects)
            except safefs.UnsafeEntryError as e:
                raise self.tampered(e, where) from e
            except OSError as e:
                raise IOFailedError(f"cannot inspect home {self.root}: {e.strerror}") from e

    def make_layout(self) -> None:
        """``init``: the home, ``objects`` (0755) and ``staging`` (0700), by descriptor; a
        link or a file planted at either name is ``home_tampered``, never followed."""
        try:
            self.root.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as e:
            raise IOFailedError(f"cannot create {self.root}: {e.strerror}") from e
        for name, mode in ((OBJECTS_DIR, 0o755), (STAGING_DIR, 0o700)):
            with self.open_dir(name, create=mode):
                pass

    def new_db_path(self) -> Path:
        """``init``: where to create the new state database: inside a private folder made by
        an unpredictable name (``mkdirat`` is exclusive; 0700) in the home, so no name the
        database or its journal is written at can have been planted. ``publish_db`` then
        links it into place. (An init that fails in between, say on a full disk, leaves
        its private folder behind; it is never reused. Not removed by the next
        init, which cannot tell it from the folder of an init running beside it.)
        """
        with self.root_fd() as root:
            try:
                fd, name = safefs.make_temp_dir_at(root, _INIT_PREFIX)
            except OSError as e:
                raise IOFailedError(
                    f"cannot create a private folder in {self.root}: {e.strerror}"
                ) from e
            os.close(fd)
        return self.root / name / DB_FILE

    def publish_db(self, tmp: Path) -> None:
        """Link the database made at ``new_db_path`` into place as ``appliance.db`` (never
        replacing one: ``AlreadyInitializedError``), then remove its private folder."""
        with self.root_fd() as root:
            try:
                folder = safefs.open_dir_at(root, tmp.parent.name)
            except (OSError, safefs.UnsafeEntryError) as e:
                raise IOFailedError(
                    f"the new state database's folder {tmp.parent} is gone: {e}"
                ) from e
            try:
                os.link(DB_FILE, DB_FILE, src_dir_fd=folder, dst_dir_fd=root, follow_symlinks=False)
                os.fsync(root)
            except FileExistsError as e:  # another init won the race
                raise AlreadyInitializedError(f"{self.root} is already an appliance home") from e
            except OSError as e:
                raise IOFailedError(
                    f"cannot link the new state database into {self.root}: {e.strerror}"
                ) from e
            finally:
                try:
                    safefs.remove_contents(folder)
                finally:
                    os.close(folder)
                os.rmdir(tmp.parent.name, dir_fd=root)

    def db(self) -> Database:
        """The state database, once the home's trust anchor is found and belongs to it."""
        from appliance.db import connect
        from appliance.evidence import anchor_of  # (evidence imports this module's floor)

        self.require()
        self.check()
        db = connect(self.db_path)
        # SQLite follows a link at the database's own name: make sure it opened ours.
        row = db.execute("PRAGMA database_list").fetchone()
        expected = os.path.join(os.path.realpath(self.root), DB_FILE)
        if row is None or row[2] != expected:
            db.conn.close()
            raise HomeTamperedError(
                f"home {self.root}: the state database opened as {row[2] if row else '?'}, "
                f"not {expected} (a link was swapped in); refusing to use this home"
            )
        try:
            anchor_of(db)
        except BaseException:
            db.conn.close()
            raise
        return db

    def clean_staging(self) -> int:
        """Remove leftovers of an interrupted import; call only while holding the lock.

        By descriptor (``safefs.remove_contents``): a link planted at ``staging``
        is refused (``home_tampered``), a link inside it is removed as a name,
        never followed, so nothing outside the home is touched.
        """
        with self.open_dir(STAGING_DIR) as staging:
            if staging is None:
                return 0
            try:
                return safefs.remove_contents(staging)
            except safefs.UnsafeEntryError as e:
                raise self.tampered(e, f"{STAGING_DIR}/") from e
            except OSError as e:
                raise IOFailedError(f"cannot clean {self.staging}: {e.strerror}") from e


class HomeLock:
    """One writer at a time: an exclusive ``flock`` on ``HOME/lock``.

    The kernel drops the lock when its holder dies, so a lock left by a dead
    process never blocks. ``wait`` polls up to ``timeout`` seconds.
    """

    def __init__(self, home: Home, *, wait: bool = False, timeout: float = 3600.0) -> None:
        self.home = home
        self.wait = wait
        self.timeout = timeout
        self.fd = -1

    def __enter__(self) -> HomeLock:
        from appliance.db import read_only

        if read_only():
            raise ReadOnlyModeError("--read-only: this command changes the home; refused")
        with self.home.root_fd() as root:
            try:
                self.fd = _open_lock(root)
            except safefs.UnsafeEntryError as e:
                raise self.home.tampered(e) from e
            except OSError as e:
                raise IOFailedError(f"cannot open lock {self.home.lock_path}: {e.strerror}") from e
        if not safefs.flock_within(self.fd, self.timeout if self.wait else 0.0, 0.05):
            os.close(self.fd)
            raise LockHeldError("another import or change is running on this home (use --wait)")
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _open_lock(root: int) -> int:
    """``HOME/lock``, a regular file never reached through a link.

    An existing lock is opened, never replaced (others may hold ``flock`` on
    its inode); an absent one is written under a random name (``O_EXCL``) and
    linked into place, so the name ``lock`` is never created by a path open.
    """
    for _ in range(8):
        try:
            return safefs.open_file_at(root, LOCK_FILE, os.O_RDWR)
        except FileNotFoundError:
            pass
        fd, tmp = safefs.create_temp_at(root, f".{LOCK_FILE}.")
        try:
            os.link(tmp, LOCK_FILE, src_dir_fd=root, dst_dir_fd=root, follow_symlinks=False)
        except FileExistsError:
            os.close(fd)
            continue  # another process made it first: open theirs
        except BaseException:
            os.close(fd)
            raise
        finally:
            os.unlink(tmp, dir_fd=root)
        return fd
    raise OSError(errno.EAGAIN, "the lock file keeps vanishing")
