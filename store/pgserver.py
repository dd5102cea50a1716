"""A throwaway PostgreSQL server started from the installed binaries (for tests, benchmarks
and trying the PostgreSQL backend on one machine).

The server's data directory, socket and log live in a fresh temporary directory; it listens on
a free port of 127.0.0.1 only, trusts local connections, and is stopped and deleted by
:meth:`TemporaryPostgres.stop`. PostgreSQL refuses to run as root, so when this process is
root the server runs as the ``postgres`` user (created by Debian's ``postgresql`` package)
through ``runuser``.

Examples
--------
>>> with TemporaryPostgres() as server:  # doctest: +SKIP
...     url = server.create_database("scratch")
...     store = Store("home", url)
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from sqlalchemy import create_engine, text

__all__ = ["INSTALL_HINT", "PostgresNotInstalled", "TemporaryPostgres", "find_binaries"]

INSTALL_HINT = (
    "install the PostgreSQL server: `apt-get install postgresql` on Debian/Ubuntu "
    "(scripts/test does it), or put a directory holding initdb and pg_ctl on PATH"
)
SERVER_USER = "postgres"
SUPERUSER = "postgres"
# Durability off: a throwaway server loses nothing that matters if the machine crashes.
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresNotInstalled(RuntimeError):
    """The PostgreSQL server binaries (initdb, pg_ctl) are not installed."""


def find_binaries() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``: from PATH, else Debian's
    ``/usr/lib/postgresql/<version>/bin`` (newest version).

    Raises
    ------
    PostgresNotInstalled
        With a message saying how to install them.
    """
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(os.path.realpath(on_path)).parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: [int(x) for x in re.findall(r"\d+", p)],
    )
    if versions:
        return Path(versions[-1]).parent
    raise PostgresNotInstalled(f"PostgreSQL binaries (initdb, pg_ctl) not found; {INSTALL_HINT}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class TemporaryPostgres:
    """A PostgreSQL server of its own in a temporary directory.

    Parameters
    ----------
    durable
        Keep PostgreSQL's default durability (fsync on), e.g. for benchmarks; by default it
        is turned off for speed.
    max_connections
        Server connection limit.
    """

    def __init__(self, *, durable: bool = False, max_connections: int = 300) -> None:
        self.bin = find_binaries()
        self.durable = durable
        self.max_connections = max_connections
        self.directory: Path | None = None
        self.port: int | None = None
        self._options = ""

    # -- lifecycle ---------------------------------------------------------------------------

    @staticmethod
    def _server_account() -> pwd.struct_passwd | None:
        """The account the server runs as: None (this process's) unless this process is root."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(SERVER_USER)
        except KeyError as err:
            raise PostgresNotInstalled(
                f"running as root, PostgreSQL needs the unprivileged user {SERVER_USER!r}, "
                f"which does not exist; {INSTALL_HINT}"
            ) from err

    def _as_server_user(self, argv: list[str]) -> list[str]:
        if self._server_account() is None:
            return argv
        return ["runuser", "-u", SERVER_USER, "--", *argv]

    def _run(self, argv: list[str]) -> None:
        done = subprocess.run(self._as_server_user(argv), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv[:2])} failed with exit code {done.returncode}:\n"
                f"{done.stdout}\n{done.stderr}"
            )

    def start(self) -> TemporaryPostgres:
        """Create the cluster and start the server; returns self."""
        account = self._server_account()
        self.directory = Path(tempfile.mkdtemp(prefix="matdx-pg-"))
        if account is not None:
            os.chown(self.directory, account.pw_uid, account.pw_gid)
        data = self.directory / "data"
        self._run(
            [
                str(self.bin / "initdb"),
                "-D", str(data),
                "-U", SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ]
        )  # fmt: skip
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.directory),
            "max_connections": str(self.max_connections),
            **({} if self.durable else FAST_SETTINGS),
        }
        last_error: Exception | None = None
        for _ in range(5):  # another process may take the free port before the server binds it
            self.port = _free_port()
            self._options = " ".join(
                f"-c {k}={v}" for k, v in {**settings, "port": self.port}.items()
            )
            try:
                self._pg_ctl_start()
                return self
            except RuntimeError as err:
                last_error = err
        self._remove()
        raise RuntimeError(f"PostgreSQL did not start: {last_error}")

    def _pg_ctl_start(self) -> None:
        self._run(
            [
                str(self.bin / "pg_ctl"),
                "-D", str(self.directory / "data"),
                "-l", str(self.log_file),
                "-o", self._options,
                "-w", "-t", "60",
                "start",
            ]
        )  # fmt: skip

    @property
    def log_file(self) -> Path:
        """The server's log file."""
        if self.directory is None:
            raise RuntimeError("the server is not running; call start() first")
        return self.directory / "server.log"

    def halt(self, mode: str = "immediate") -> None:
        """Stop the server but keep its data, as an outage would (:meth:`resume` restarts it).

        Parameters
        ----------
        mode
            ``immediate`` (processes quit at once, the restart recovers from the WAL, as after
            a crash) or ``fast`` (sessions are ended, then a clean shutdown).
        """
        if mode not in ("immediate", "fast"):
            raise ValueError(f"mode: {mode!r} is not 'immediate' or 'fast'")
        if self.directory is None:
            raise RuntimeError("the server is not running; call start() first")
        self._run(
            [str(self.bin / "pg_ctl"), "-D", str(self.directory / "data"), "-m", mode, "-w",
             "stop"]
        )

    def resume(self) -> None:
        """Start the server halted by :meth:`halt` again, on the same port and data."""
        if self.directory is None:
            raise RuntimeError("the server was removed; start a new one")
        self._pg_ctl_start()

    def stop(self) -> None:
        """Stop the server (fast shutdown: sessions are ended) and delete its directory."""
        if self.directory is None:
            return
        data = self.directory / "data"
        if (data / "postmaster.pid").is_file():
            subprocess.run(
                self._as_server_user(
                    [str(self.bin / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]
                ),
                capture_output=True,
            )
        self._remove()

    def _remove(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> TemporaryPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- databases ---------------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of a database on this server."""
        if self.port is None:
            raise RuntimeError("the server is not running; call start() first")
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _admin(self, statement: str) -> None:
        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(text(statement))
        finally:
            engine.dispose()

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create an empty database (or a copy of ``template``); returns its URL."""
        for value in (name, template):
            if value is not None and not DATABASE_NAME.match(value):
                raise ValueError(f"database name: {value!r} is not a plain lowercase identifier")
        copy = f" TEMPLATE {template}" if template else " TEMPLATE template0"
        self._admin(f"CREATE DATABASE {name}{copy}")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, ending the sessions still connected to it."""
        if not DATABASE_NAME.match(name):
            raise ValueError(f"database name: {name!r} is not a plain lowercase identifier")
        self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
