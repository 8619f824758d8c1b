"""Throwaway PostgreSQL clusters for the tests that restart, promote or overload a server
(test_standby.py, test_worker_launcher.py), so the shared cluster of TS_PGPORT is never disturbed.

A cluster is made by scripts/lib.sh's cluster_init (token_store preloaded, its own encryption key,
wal_level replica, loopback only) in a fresh directory under TS_THROWAWAY_DIR (scripts/test.sh points
it into its per-run temporary directory; default: the system's temporary directory), owned by
postgres when the tests run as root. `clusters()` yields a factory and, even on failure, stops every
server it started and removes the directories."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parents[2]
TARGET = REPO / "target"


# Where to look when a test's own port is taken (another run of the suite, say).
SPARE_PORTS = range(54360, 54400)
_taken: set[int] = set()


def free_port(preferred: int) -> int:
    """`preferred` if nothing listens there, else the first free port of SPARE_PORTS."""
    for port in (preferred, *SPARE_PORTS):
        if port in _taken:
            continue
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _taken.add(port)
        return port
    raise RuntimeError(f"no free port for a throwaway cluster (wanted {preferred})")


def as_pg(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run a PostgreSQL program as a user it accepts (root is refused), failing loudly."""
    cmd = ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs)


class Cluster:
    def __init__(self, root: Path, name: str, port: int, pgbin: Path):
        self.dir = root / name
        self.data = self.dir / "data"
        self.server_log = self.dir / "server.log"
        self.port = port
        self.pgbin = pgbin
        self._open: list[psycopg.Connection] = []

    # ---- life cycle --------------------------------------------------------------------------

    def init(self, worker_dbs: str, settings: dict[str, str] | None = None):
        """initdb through scripts/lib.sh's cluster_init, then append `settings` to postgresql.conf."""
        env = dict(os.environ, TS_WORKER_DBS=worker_dbs, PG_CONFIG=str(self.pgbin / "pg_config"))
        subprocess.run(
            ["bash", "-c", 'source scripts/lib.sh && cluster_init "$1" "$2"', "cluster_init", str(self.dir),
             str(self.port)],
            cwd=REPO, env=env, check=True, capture_output=True, text=True,
        )
        self.append_conf(settings or {})

    def base_backup_of(self, primary: "Cluster"):
        """A streaming hot standby of `primary` (pg_basebackup -R), listening on this port."""
        self.dir.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.dir.chmod(0o700)
        as_pg(str(self.pgbin / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
              "-D", str(self.data), "-R", "-X", "stream", "-c", "fast")
        self.append_conf({"port": str(self.port), "unix_socket_directories": f"'{self.dir}'"})

    def append_conf(self, settings: dict[str, str]):
        """Lines `name = value` (value as written in the file) at the end of postgresql.conf."""
        lines = "".join(f"{name} = {value}\n" for name, value in settings.items())
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(lines)

    def start(self):
        as_pg(str(self.pgbin / "pg_ctl"), "-D", str(self.data), "-l", str(self.server_log), "-w", "-t", "60",
              "start")

    def stop(self):
        self.close_all()
        if (self.data / "postmaster.pid").exists():
            try:
                as_pg(str(self.pgbin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
            except subprocess.CalledProcessError:
                subprocess.run(
                    (["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else [])
                    + [str(self.pgbin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                    capture_output=True,
                )

    # ---- sessions ----------------------------------------------------------------------------

    def connect(self, dbname: str = "postgres", **kwargs) -> psycopg.Connection:
        """An autocommit superuser connection, closed by close_all (and at stop)."""
        conn = psycopg.connect(host="127.0.0.1", port=self.port, dbname=dbname, user="postgres",
                               autocommit=True, connect_timeout=10, **kwargs)
        self._open.append(conn)
        return conn

    def close_all(self):
        while self._open:
            try:
                self._open.pop().close()
            except Exception:
                pass

    def one(self, query, params=None, dbname: str = "postgres"):
        """First column of the first row, on a short-lived connection."""
        with psycopg.connect(host="127.0.0.1", port=self.port, dbname=dbname, user="postgres", autocommit=True,
                             connect_timeout=10) as conn:
            row = conn.execute(query, params).fetchone()
            return row[0] if row else None

    def kill9(self, pid: int):
        """SIGKILL backend `pid`, then wait for the crash restart it causes: first for the
        postmaster to end every other session (a probe session drops), then for it to accept
        sessions again."""
        probe = psycopg.connect(host="127.0.0.1", port=self.port, dbname="postgres", user="postgres",
                                autocommit=True)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline:
                probe.execute("SELECT 1")
                time.sleep(0.05)
            raise AssertionError("the postmaster did not restart the cluster after a kill -9")
        except psycopg.OperationalError:
            pass
        finally:
            probe.close()
        self.wait_ready()

    def wait_ready(self, timeout: float = 60):
        """After a crash: wait until the postmaster has reinitialised and accepts sessions again."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.one("SELECT NOT pg_is_in_recovery()"):
                    return
            except psycopg.OperationalError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the crashed cluster {self.dir.name} did not come back within {timeout} s")

    def configure(self, settings: dict[str, str | None]):
        """ALTER SYSTEM SET (None: RESET) and reload; waits until a new session shows the values."""
        conn = self.connect()
        for name, value in settings.items():
            if value is None:
                conn.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.SQL(name)))
            else:
                conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.SQL(name), sql.Literal(value)))
        conn.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            shown = {n: self.one("SELECT current_setting(%s)", (n,)) for n in settings}
            if all(v is None or shown[n] == v or _same_duration(shown[n], v) for n, v in settings.items()):
                return
            time.sleep(0.1)
        raise AssertionError(f"reload did not apply {settings}")

    # ---- server log --------------------------------------------------------------------------

    def log_size(self) -> int:
        return log_size(self.server_log)

    def log_text(self, start: int = 0) -> str:
        return log_text(self.server_log, start)


def log_size(path: Path) -> int:
    """Bytes in a server log so far (0 before it exists): an offset for `log_text`."""
    return path.stat().st_size if path.exists() else 0


def log_text(path: Path, start: int = 0) -> str:
    """A server log from byte `start` on."""
    with open(path, "rb") as f:
        f.seek(start)
        return f.read().decode("utf-8", errors="replace")


def _same_duration(shown: str, wanted: str) -> bool:
    """'1s' as set and '1s' as shown, or '0' and '0'; '60' is shown as '1min'."""
    units = {"ms": 0.001, "s": 1, "min": 60, "h": 3600, "d": 86400}
    def secs(v):
        v = v.strip()
        for u in sorted(units, key=len, reverse=True):
            if v.endswith(u) and v[: -len(u)].strip().lstrip("-").isdigit():
                return int(v[: -len(u)]) * units[u]
        return int(v) if v.lstrip("-").isdigit() else None
    a, b = secs(shown), secs(wanted)
    return a is not None and a == b


@contextmanager
def clusters(prefix: str, pgbin: Path):
    """A factory `make(name, port) -> Cluster` (on `port`, or a spare one when it is taken);
    everything is stopped and removed at the end."""
    base = os.environ.get("TS_THROWAWAY_DIR") or tempfile.gettempdir()
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    root.chmod(0o755)  # postgres must reach its directories inside (only this new directory changes)
    made: list[Cluster] = []

    def make(name: str, port: int) -> Cluster:
        c = Cluster(root, name, free_port(port), pgbin)
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            try:
                c.stop()
            except Exception:
                pass
        shutil.rmtree(root, ignore_errors=True)
        _taken.difference_update(c.port for c in made)
