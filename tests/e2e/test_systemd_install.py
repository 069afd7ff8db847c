"""The README's systemd install, line by line, under a real systemd.

systemd boots as PID 1 of private namespaces (mount, PID, network, UTS, IPC, cgroup) on an
overlay of this machine's root, the way a container would: the install writes to the overlay
(a tmpfs), never to the host, and everything ends with the namespace. Needs root, util-linux
(unshare, nsenter, pivot_root), systemd and overlayfs; skipped where the machine does not allow
it. The namespace has only a loopback interface, so `pip install` runs with the host's network
(and pip configuration) in the overlay's file system.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO, readme_install_steps

SYSTEMD = Path("/usr/lib/systemd/systemd")
DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
UNIT = "scheduler-daemon"
CONFIG = "/etc/scheduler-daemon/config.yaml"
PR_SET_PDEATHSIG = 1
UNSHARE = ("unshare", "--mount", "--pid", "--fork", "--net", "--uts", "--ipc", "--cgroup")

# Run by unshare as PID 1 of the new namespaces, then replaced by systemd. As systemd-nspawn
# does, the booted system gets a /dev, IPC and cgroup of its own, a read-only /sys and /proc/sys
# and no capability to load modules or set the clock: nothing it does reaches this machine.
BOOT = r"""
set -e
root="$1"
mkdir -p "$root/layers" "$root/merged"
mount -t tmpfs tmpfs "$root/layers"
mkdir "$root/layers/upper" "$root/layers/work"
mount -t overlay overlay \
    -o "lowerdir=/,upperdir=$root/layers/upper,workdir=$root/layers/work" "$root/merged"
cd "$root/merged"
mount -t proc proc proc
for ro in proc/sys proc/sysrq-trigger; do
    [ -e "$ro" ] || continue
    mount --bind "$ro" "$ro"
    mount -o remount,bind,ro "$ro"
done
mount -t sysfs -o ro sysfs sys
mount -t cgroup2 cgroup2 sys/fs/cgroup
mount -t tmpfs -o mode=755,nosuid tmpfs dev
for node in null zero full random urandom tty; do
    : > "dev/$node"
    mount --bind "/dev/$node" "dev/$node"
done
: > "$root/console"
: > dev/console
mount --bind "$root/console" dev/console
mkdir dev/pts dev/shm dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts dev/pts
ln -s pts/ptmx dev/ptmx
ln -s /proc/self/fd dev/fd
# The unit's RemoveIPC= deletes what its user owns here; that user may be this machine's
# `scheduler-daemon` (DynamicUser= reuses an existing one), as the test PostgreSQL's is.
mount -t tmpfs -o mode=1777 tmpfs dev/shm
mount -t mqueue mqueue dev/mqueue
mount -t tmpfs tmpfs run
mount -t tmpfs tmpfs tmp
mkdir -p .oldroot
pivot_root . .oldroot
umount -l /.oldroot
# What systemd does as a host's PID 1 but not in a container: credentials rely on it.
mount --make-rshared /
exec setpriv --bounding-set -sys_module,-sys_time,-sys_rawio,-syslog,-wake_alarm \
    env container=scheduler-daemon-test /usr/lib/systemd/systemd --unit=basic.target
"""


def _cannot_boot() -> str | None:
    if os.geteuid() != 0:
        return "needs root (namespaces and mounts)"
    for tool in ("unshare", "nsenter", "pivot_root", "setpriv"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not SYSTEMD.exists():
        return f"{SYSTEMD} is not installed"
    if _own_cgroup2() is None:
        return "no cgroup2 hierarchy mounted"
    probe = subprocess.run(
        [*UNSHARE, "mount", "-t", "tmpfs", "tmpfs", "/mnt"], capture_output=True, timeout=30
    )
    if probe.returncode != 0:
        return f"namespaces or mounts are not allowed here: {probe.stderr.decode()[-500:]}"
    if str(REPO).startswith("/tmp/") or os.stat(REPO).st_dev != os.stat("/").st_dev:
        return "the repository is not on the root file system, the one the overlay shows"
    return None


def _own_cgroup2() -> Path | None:
    """This process's cgroup in the cgroup2 hierarchy, as a directory."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[fields.index("-") + 1] == "cgroup2":
            mount = Path(fields[4])
            break
    else:
        return None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return mount / line[3:].lstrip("/")
    return None


def _remove_cgroup(path: Path) -> None:
    """Remove an emptied cgroup tree, deepest first (a dying cgroup may be busy a moment)."""
    for _ in range(50):
        for child in sorted((p for p in path.rglob("*") if p.is_dir()), reverse=True):
            with contextlib.suppress(OSError):
                child.rmdir()
        with contextlib.suppress(OSError):
            path.rmdir()
        if not path.exists():
            return
        time.sleep(0.1)


def _start_in(cgroup: Path) -> Callable[[], None]:
    """Before unshare runs: into a cgroup of its own (the booted system's cgroup root, apart
    from any other test's), and killed if the test process dies (taking the namespace with it,
    --kill-child)."""

    def prepare() -> None:
        (cgroup / "cgroup.procs").write_text(str(os.getpid()))
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    return prepare


class Booted:
    """A systemd booted in namespaces of its own; commands run inside with ``sh``."""

    def __init__(self, root: Path) -> None:
        script = root / "boot.sh"
        script.write_text(BOOT)
        self.log = root / "boot.log"
        parent = _own_cgroup2()
        assert parent is not None
        self.cgroup = parent / f"scheduler-daemon-test-{os.getpid()}-{root.name}"
        self.cgroup.mkdir()
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [*UNSHARE, "--kill-child", "sh", str(script), str(root)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_start_in(self.cgroup),
            )
        self.pid = 0  # systemd's, as this machine sees it

    def wait_booted(self, timeout: float = 60) -> str | None:
        """None once systemd has finished booting, else why not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"unshare exited {self.proc.returncode}: {self.log.read_text()[-2000:]}"
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            pids = children.read_text().split() if children.exists() else []
            if pids and Path(f"/proc/{pids[0]}/exe").resolve() == SYSTEMD.resolve():
                self.pid = int(pids[0])
                state = self.sh("systemctl is-system-running --wait", timeout=timeout).stdout
                if state.strip() in ("running", "degraded"):
                    return None
            time.sleep(0.2)  # a real process booting: poll it
        return f"systemd did not boot within {timeout}s: {self.log.read_text()[-2000:]}"

    def sh(
        self, command: str, *, network: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """``command`` as root in the booted system; ``network``: with this machine's network
        (only the file system is the booted one's: for pip)."""
        spaces = ["-m", "-r"] if network else ["-a", "-r"]
        passed = {
            k: v
            for k, v in os.environ.items()
            if k.startswith("PIP_") or k.lower().endswith("_proxy")
        }
        env = {**passed, "PATH": DEBIAN_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
        return subprocess.run(
            ["nsenter", "-t", str(self.pid), *spaces, "--", "/bin/sh", "-c", command],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd="/",
        )

    def ok(self, command: str, *, network: bool = False, timeout: float = 60) -> str:
        done = self.sh(command, network=network, timeout=timeout)
        if done.returncode != 0:
            journal = self.sh(f"journalctl -u {UNIT} -n 40 -o cat --no-pager").stdout
            raise AssertionError(f"{command}\n{done.stdout}\n{done.stderr}\njournal:\n{journal}")
        return done.stdout

    def show(self, *properties: str) -> dict[str, str]:
        out = self.ok(f"systemctl show {UNIT} " + " ".join(f"-p {p}" for p in properties))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def output_of_failed_start(self) -> list[str]:
        """Restart the unit, expect it failed for good (exit 78, no restart scheduled), and
        return what the daemon wrote (stdout and stderr: the journal)."""
        assert self.sh(f"systemctl restart {UNIT}").returncode != 0
        state = self.show("ActiveState", "ExecMainStatus", "ExecMainPID", "NRestarts")
        assert (state["ActiveState"], state["ExecMainStatus"], state["NRestarts"]) == (
            "failed",
            "78",
            "0",
        )
        self.sh("journalctl --sync")
        return self.ok(f"journalctl -o cat --no-pager _PID={state['ExecMainPID']}").splitlines()

    def stop(self) -> None:
        if self.pid:
            os.kill(self.pid, signal.SIGKILL)  # PID 1 of its namespace: all of it goes
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        _remove_cgroup(self.cgroup)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Booted]:
    """A booted systemd where the README's install lines ran, each as written (but as root
    already, without sudo)."""
    why = _cannot_boot()
    if why:
        pytest.skip(why)
    system = Booted(tmp_path_factory.mktemp("systemd"))
    try:
        why = system.wait_booted()
        assert why is None, why
        for step in readme_install_steps():
            command = f"cd {REPO} && {step.replace('sudo ', '')}"
            system.ok(command, network="pip install" in step, timeout=300)
        yield system
    finally:
        system.stop()


def test_the_readme_install_runs_the_service(installed: Booted) -> None:
    assert installed.sh(f"systemctl is-active {UNIT}").stdout.strip() == "active"
    state = installed.show("MainPID", "StatusText", "Documentation")
    assert state["StatusText"].startswith("1 jobs")
    uid = installed.ok(f"awk '/^Uid:/ {{print $2}}' /proc/{state['MainPID']}/status").strip()
    assert uid != "0"  # the dynamic user
    installed.ok("test -e /var/lib/private/scheduler-daemon/daemon.lock")  # $STATE_DIRECTORY
    installed.ok(f"test -f {state['Documentation'].removeprefix('file://')}")

    # The operator: the CLI on PATH finds the config and, through it, the token (root's file).
    assert "heartbeat" in installed.ok("cd / && scheduler-daemon status")
    # The admin API answered (the database path would queue a run instead).
    assert '"fire_id"' in installed.ok("scheduler-daemon trigger heartbeat")
    installed.ok(f"systemctl reload {UNIT}")
    assert "FAILED" not in installed.show("StatusText")["StatusText"]


def test_a_start_error_is_one_line_and_no_restart_loop(installed: Booted) -> None:
    installed.ok(f"cp {CONFIG} /root/config.yaml")

    # An absolute state_dir is used as written: here, in read-only /etc.
    installed.ok(f"echo 'state_dir: /etc/scheduler-daemon/var' >> {CONFIG}")
    (line,) = installed.output_of_failed_start()
    # Which of the two the kernel says first varies: root's /etc, mounted read-only.
    assert re.fullmatch(
        r"error: cannot use state_dir /etc/scheduler-daemon/var: "
        r"(Permission denied|Read-only file system) \(as user scheduler-daemon\); under systemd, "
        r"leave state_dir unset to use \$STATE_DIRECTORY \(/var/lib/scheduler-daemon\)",
        line,
    ), line

    # A config the dynamic user cannot read (what `install -m 0640` made).
    installed.ok(f"install -m 0640 /root/config.yaml {CONFIG}")
    assert installed.output_of_failed_start() == [
        f"error: cannot read config file {CONFIG}: Permission denied (as user scheduler-daemon)"
    ]

    installed.ok(f"install -m 0644 /root/config.yaml {CONFIG}")
    installed.ok(f"systemctl restart {UNIT}")
    installed.ok(f"systemctl stop {UNIT}")
    assert installed.show("Result", "ExecMainStatus") == {
        "Result": "success",
        "ExecMainStatus": "0",
    }
