"""scripts/test.sh with CI=true: a PostgreSQL version it cannot build fails the run, so CI's matrix
cannot shrink unnoticed; a user's own run still skips it, saying so in the summary.

PostgreSQL 99 has no tarball (TS_PG_SRC_DIR and TS_PG_CACHE point at empty folders) and no Debian
suite, so build-pg.sh skips it at once, without the network; the run stops before any build."""

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(tmp_path, **env):
    for d in ("src", "cache"):
        (tmp_path / d).mkdir(exist_ok=True)
    e = {k: v for k, v in os.environ.items() if k not in ("CI", "TS_MATRIX_STRICT")}
    e.update(TS_PG_SRC_DIR=str(tmp_path / "src"), TS_PG_CACHE=str(tmp_path / "cache"), **env)
    p = subprocess.run(["bash", "scripts/test.sh", "--fast", "--pg", "99"], cwd=REPO, env=e,
                       capture_output=True, text=True, timeout=600)
    return p.returncode, p.stdout + p.stderr


def test_ci_fails_a_version_it_cannot_build(tmp_path):
    rc, out = run(tmp_path, CI="true")
    assert rc != 0, out
    assert "PostgreSQL 99: FAILED, no source" in out, out
    assert "SKIPPED" not in out, out


def test_a_users_run_skips_it_and_says_so(tmp_path):
    rc, out = run(tmp_path)
    assert rc == 0, out
    assert "PostgreSQL 99: SKIPPED, no source" in out, out
    assert "did not test it" in out, out
