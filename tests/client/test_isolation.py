"""The tests run on a private copy of PostgreSQL, never on the host's installation.

scripts/test.sh copies the installation into its per-run temporary directory (TS_PRIVATE_PG mirrors
the original paths under it) and installs the build there, so that a server running from the host's
installation (the demo's cluster, say) never sees its token_store.so replaced under it. Here the
server under test proves it: its postmaster is the copy's binary, every backend maps token_store.so
from the copy's library directory, and its data directory is in the same temporary directory."""

import os
import subprocess
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def private() -> Path:
    root = os.environ.get("TS_PRIVATE_PG")
    assert root, "TS_PRIVATE_PG is not set: the tests must run on a private copy of PostgreSQL (scripts/test.sh)"
    return Path(root)


def original_pg_config() -> str:
    path = os.environ.get("TS_ORIGINAL_PG_CONFIG")
    assert path, "TS_ORIGINAL_PG_CONFIG is not set (scripts/test.sh sets it with TS_PRIVATE_PG)"
    return path


def test_pg_config_under_test_is_the_private_copy(ts, private):
    out = subprocess.run([str(ts.pgbin / "pg_config"), "--pkglibdir"], capture_output=True, text=True, check=True)
    original = subprocess.run([original_pg_config(), "--pkglibdir"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"{private}{original.stdout.strip()}"
    assert ts.pgbin.resolve().is_relative_to(private.resolve())


def test_server_maps_token_store_from_the_private_copy(ts, private):
    conn = ts.connect()
    pid = ts.one(conn, "SELECT pg_backend_pid()")
    # preloaded: every backend has the library mapped
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    mapped = {line.split()[-1] for line in maps if line.endswith("/token_store.so")}
    original_libdir = subprocess.run([original_pg_config(), "--pkglibdir"], capture_output=True, text=True,
                                     check=True).stdout.strip()
    assert mapped == {f"{private}{original_libdir}/token_store.so"}
    postmaster = int(Path(f"/proc/{pid}/status").read_text().split("PPid:")[1].split()[0])
    exe = Path(os.readlink(f"/proc/{postmaster}/exe"))
    assert exe.is_relative_to(private), f"the postmaster runs {exe}, not the private copy's binary"


def test_data_directory_is_in_the_run_directory(ts, private):
    data = Path(ts.one(ts.connect(), "SHOW data_directory"))
    run_dir = private.parent
    assert data.resolve().is_relative_to(run_dir.resolve()), f"{data} is outside the run's directory {run_dir}"
    assert ts.cluster_dir.resolve().is_relative_to(run_dir.resolve())
