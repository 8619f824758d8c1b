"""The client examples in examples/ (Python with psycopg, Node.js with pg, Rust with tokio-postgres)
run against a fresh database of the test cluster, each twice (the first run creates its key, the
second finds it), print every step and exit 0; against a database without token_store they exit
non-zero.

Node's dependencies are installed with `npm ci` into a copy under target/ (so no node_modules/
appears in the tree), and the Rust example is built with `cargo build --release --locked` into
target/examples-rust (minutes the first time, cached after)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
DB = "ts_t_examples"
NO_EXTENSION_DB = "ts_t_examples_bare"


def expected_lines(lang: str, key_step: str) -> list[str]:
    """Regular expressions, one per line of the example's standard output."""
    return [
        r"connected: PostgreSQL 1\d\.\d+.*",
        rf"key: example-{lang} {key_step}",
        r"issued: eyJ[A-Za-z0-9_-]{17}\.\.\.",
        r"verified: sub=example-user scope=read",
        r"valid: true",
        r"revoked: true",
        r"verify after revoke: SQLSTATE 28000 token rejected: revoked",
        r"introspect after revoke: active=false reason=revoked",
        r"done",
    ]


def build(cmd: list[str], cwd: Path, timeout: int, env: dict | None = None):
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, **(env or {})})
    assert out.returncode == 0, f"{' '.join(cmd)} failed in {cwd}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"


def command_python() -> tuple[list[str], Path]:
    # the test venv has psycopg (examples/python/requirements.txt pins the same)
    return [sys.executable, str(EXAMPLES / "python" / "app.py")], EXAMPLES / "python"


def command_node() -> tuple[list[str], Path]:
    for tool in ("node", "npm"):
        assert shutil.which(tool), f"{tool} is not installed"
    work = ROOT / "target" / "examples-node"
    work.mkdir(parents=True, exist_ok=True)
    for name in ("app.js", "package.json", "package-lock.json"):
        shutil.copyfile(EXAMPLES / "node" / name, work / name)
    build(["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline"], work, 300)
    return ["node", "app.js"], work


def command_rust() -> tuple[list[str], Path]:
    target = ROOT / "target" / "examples-rust"
    build(["cargo", "build", "--release", "--locked", "--quiet"], EXAMPLES / "rust", 1500,
          env={"CARGO_TARGET_DIR": str(target)})
    return [str(target / "release" / "token_store_example")], EXAMPLES / "rust"


COMMANDS = {"python": command_python, "node": command_node, "rust": command_rust}


@pytest.fixture(scope="module")
def databases(ts):
    ts.fresh_db(DB)
    ts.drop_db(NO_EXTENSION_DB)
    ts.ensure_db(NO_EXTENSION_DB)
    ts.close_all()
    yield
    ts.drop_db(DB)
    ts.drop_db(NO_EXTENSION_DB)


@pytest.fixture(scope="module", params=sorted(COMMANDS))
def example(request, databases):
    cmd, cwd = COMMANDS[request.param]()
    return request.param, cmd, cwd


def run_example(ts, cmd, cwd, dbname):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGHOST=ts.host, PGPORT=str(ts.port), PGUSER="postgres", PGDATABASE=dbname)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_example_issues_verifies_and_revokes(ts, example):
    lang, cmd, cwd = example
    for run_no, key_step in enumerate(("created", "exists"), start=1):
        out = run_example(ts, cmd, cwd, DB)
        assert out.returncode == 0, f"{lang} example failed (run {run_no}):\n{out.stdout}\n{out.stderr}"
        lines = out.stdout.splitlines()
        patterns = expected_lines(lang, key_step)
        assert len(lines) == len(patterns), out.stdout
        for line, pattern in zip(lines, patterns):
            assert re.fullmatch(pattern, line), f"{lang}: {line!r} does not match {pattern!r}"
    conn = ts.connect(DB)
    assert ts.rows(conn, "SELECT alg, state FROM token_store.keys WHERE kid = %s", (f"example-{lang}",)) == [
        ("HS256", "active")]
    # each run left one revoked token of its own key behind
    assert ts.one(conn, """SELECT count(*) FILTER (WHERE revoked_at IS NOT NULL AND revoke_reason = 'example')
                             FROM token_store.tokens WHERE kid = %s AND subject = 'example-user'""",
                  (f"example-{lang}",)) == 2


def test_example_fails_without_the_extension(ts, example):
    lang, cmd, cwd = example
    out = run_example(ts, cmd, cwd, NO_EXTENSION_DB)
    assert out.returncode != 0, f"{lang} example exited 0 against a database without token_store:\n{out.stdout}"
    assert "FAILED" in out.stderr and "token_store" in out.stderr, out.stderr
    assert "done" not in out.stdout.splitlines()
