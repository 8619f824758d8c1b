"""Packaging: scripts/package.sh builds a .deb whose files are the ones installed for the test
cluster, at the paths of Debian's and PGDG's postgresql-NN packages (for 17 and 18, built here from
source, too); META.json is a valid PGXN meta-spec 1.0.0 document for this version.

The .deb is built once per run with `scripts/package.sh --debug`: scripts/test.sh installs the
debug build, so its files can be compared byte for byte with the installed ones (the release build
differs only in cargo's profile and xz compression). It is never installed here (no dpkg -i): the
test cluster already runs the very same files. scripts/test.sh runs the cluster from a private copy
of the PostgreSQL installation (TS_PRIVATE_PG, which mirrors the original paths under it); the
package is built for the original installation (TS_ORIGINAL_PG_CONFIG) and compared with the copy."""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed (not Debian/Ubuntu)")


def cargo_version() -> str:
    return re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M).group(1)


def pg_config(path: str, flag: str) -> str:
    return subprocess.run([path, flag], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def paths(ts):
    """The package's paths (those of the original installation) and the test cluster's (its copy)."""
    private = str(ts.pgbin / "pg_config")
    original = os.environ.get("TS_ORIGINAL_PG_CONFIG") or private
    major = re.match(r"PostgreSQL (\d+)", pg_config(original, "--version")).group(1)
    # the package is for Debian's and PGDG's layout, whichever installation it was built against
    libdir, extdir = f"/usr/lib/postgresql/{major}/lib", f"/usr/share/postgresql/{major}/extension"
    built_libdir, built_extdir = pg_config(original, "--pkglibdir"), pg_config(original, "--sharedir") + "/extension"
    installed_libdir = pg_config(private, "--pkglibdir")
    installed_extdir = pg_config(private, "--sharedir") + "/extension"
    if original != private:
        root = os.environ["TS_PRIVATE_PG"]
        assert (installed_libdir, installed_extdir) == (root + built_libdir, root + built_extdir)
    if original == f"/usr/lib/postgresql/{major}/bin/pg_config":  # Debian's own: the same layout
        assert (built_libdir, built_extdir) == (libdir, extdir)
    return {"major": major, "libdir": libdir, "extdir": extdir, "name": f"postgresql-{major}-token-store",
            "pg_config": original, "installed": {libdir: installed_libdir, extdir: installed_extdir}}


@pytest.fixture(scope="module")
def deb(paths) -> Path:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "package.sh"), "--debug"], cwd=ROOT,
                         capture_output=True, text=True, timeout=1800,
                         env={**os.environ, "PG_CONFIG": paths["pg_config"]})
    assert out.returncode == 0, f"scripts/package.sh failed:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    path = Path(out.stdout.strip().splitlines()[-1])
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    assert path == ROOT / "target" / "deb" / "debug" / f"{paths['name']}_{cargo_version()}_{arch}.deb"
    assert path.is_file()
    return path


def deb_files(deb: Path) -> dict[str, str]:
    """path -> mode string of every regular file in the package."""
    listing = subprocess.run(["dpkg-deb", "--contents", str(deb)], capture_output=True, text=True, check=True).stdout
    files = {}
    for line in listing.splitlines():
        mode, _owner, _size, _date, _time, path = line.split(None, 5)
        if mode.startswith("-"):
            files[path.removeprefix(".")] = mode
        else:
            assert mode.startswith("d"), f"not a file nor a directory: {line}"
    return files


def test_contents_lists_library_control_and_sql(deb, paths):
    files = deb_files(deb)
    lib, ext, doc = paths["libdir"], paths["extdir"], f"/usr/share/doc/{paths['name']}"
    version = cargo_version()
    for path in (f"{lib}/token_store.so", f"{ext}/token_store.control", f"{ext}/token_store--{version}.sql"):
        assert path in files, f"{path} is not in the package:\n" + "\n".join(sorted(files))
        assert files[path] == "-rw-r--r--", (path, files[path])
    stray = [p for p in files if not (p.startswith((f"{lib}/token_store", f"{ext}/token_store", f"{doc}/")))]
    assert stray == []
    assert {f"{doc}/README.md", f"{doc}/CHANGELOG.md", f"{doc}/copyright"} <= set(files)


def test_control_fields(deb, paths):
    def field(name):
        return subprocess.run(["dpkg-deb", "--field", str(deb), name], capture_output=True, text=True,
                              check=True).stdout.strip()

    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    assert field("Package") == paths["name"]
    assert field("Version") == cargo_version()
    assert field("Architecture") == arch
    assert f"postgresql-{paths['major']}" in [d.strip() for d in field("Depends").split(",")]
    assert field("Maintainer") and field("Description").startswith("JSON Web Tokens")


def test_extracted_files_are_the_installed_ones(deb, paths, tmp_path):
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path / "root")], check=True)
    subprocess.run(["dpkg-deb", "-e", str(deb), str(tmp_path / "DEBIAN")], check=True)
    files = deb_files(deb)
    compared = 0
    for path in files:
        for packaged, installed in paths["installed"].items():
            if path.startswith(packaged + "/"):
                installed_path = installed + path[len(packaged):]
                assert filecmp.cmp(tmp_path / "root" / path.lstrip("/"), installed_path, shallow=False), (
                    f"{path} in the package differs from the installed {installed_path}")
                compared += 1
                break
    assert compared >= 3
    # and DEBIAN/md5sums describes what was extracted
    sums = {}
    for line in (tmp_path / "DEBIAN" / "md5sums").read_text().splitlines():
        digest, path = line.split(None, 1)
        sums["/" + path] = digest
    assert set(sums) == set(files)
    for path, digest in sums.items():
        assert hashlib.md5((tmp_path / "root" / path.lstrip("/")).read_bytes()).hexdigest() == digest, path


def test_meta_json_is_a_pgxn_distribution_of_this_version():
    meta = json.loads((ROOT / "META.json").read_text())
    assert meta["meta-spec"]["version"] == "1.0.0"
    for key in ("name", "abstract", "version", "maintainer", "license", "provides"):
        assert meta.get(key), f"META.json lacks {key}"
    assert meta["name"] == "token_store" and meta["version"] == cargo_version()
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"])   # semver, as PGXN requires
    ext = meta["provides"]["token_store"]
    assert ext["version"] == cargo_version()
    for key in ("file", "docfile"):
        assert (ROOT / ext[key]).is_file(), f"META.json provides.token_store.{key} names a missing file"
    assert meta["license"] == "apache_2_0"   # Cargo.toml: Apache-2.0
    assert 'license = "Apache-2.0"' in (ROOT / "Cargo.toml").read_text()
    assert meta["release_status"] in ("stable", "testing", "unstable")


def test_changelog_has_this_version():
    assert re.search(rf"^## {re.escape(cargo_version())}\b", (ROOT / "CHANGELOG.md").read_text(), re.M)
