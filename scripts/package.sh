#!/usr/bin/env bash
# Builds installable Debian/Ubuntu packages of token_store, one per PostgreSQL major version, from
# `cargo pgrx package` output. Files go to the paths of Debian's and PGDG's (apt.postgresql.org)
# postgresql-NN packages: /usr/lib/postgresql/NN/lib and /usr/share/postgresql/NN/extension.
#
#   scripts/package.sh                  release build for $PG_CONFIG (default: PostgreSQL 15)
#                                       -> target/deb/postgresql-15-token-store_<version>_<arch>.deb
#   scripts/package.sh --pg 17 --pg 18  one package per version named: 15 is Debian's; 17, 18 are
#                                       built against scripts/build-pg.sh's build of the upstream
#                                       source (the same major's headers as PGDG's packages)
#   scripts/package.sh --all            15, 17 and 18: every version scripts/test.sh tests
#   scripts/package.sh --debug          debug build -> target/deb/debug/... (what scripts/test.sh
#                                       installs; tests/client/test_package.py checks it against the
#                                       installed files)
#
# Prints the path of each package built. Install one with
# `apt install ./target/deb/postgresql-15-token-store_<version>_<arch>.deb`.
# DEB_MAINTAINER overrides the Maintainer field.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$TS_ROOT"

mode=release
versions=()
while [ "$#" -gt 0 ]; do
    case "$1" in
        --debug) mode=debug ;;
        --pg) [ "$#" -ge 2 ] && [[ "$2" =~ ^[0-9]+$ ]] || die "--pg needs a major version"; versions+=("$2"); shift ;;
        --all) versions=(15 17 18) ;;
        *) echo "usage: $0 [--debug] [--pg MAJOR]... | [--all]" >&2; exit 2 ;;
    esac
    shift
done

for tool in dpkg-deb dpkg cargo; do
    command -v "$tool" >/dev/null || { echo "$tool is missing (Debian/Ubuntu: dpkg; Rust: rustup)" >&2; exit 1; }
done
cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION" ||
    { echo "cargo-pgrx $PGRX_VERSION is missing: cargo install cargo-pgrx --version $PGRX_VERSION --locked" >&2; exit 1; }

version="$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -1)"
[ -n "$version" ] || { echo "no version in Cargo.toml" >&2; exit 1; }

# package_one PG_CONFIG: the package for that installation's major version.
package_one() {
    local cfg="$1" pg_major arch name libdir extdir outdir compress pgrx_flags pgrx_out root deb home tmp_home description
    pg_major="$(pg_major "$cfg")"
    arch="$(dpkg --print-architecture)"
    name="postgresql-$pg_major-token-store"
    libdir="/usr/lib/postgresql/$pg_major/lib"
    extdir="/usr/share/postgresql/$pg_major/extension"

    outdir="$TS_ROOT/target/deb"
    compress=(-Zxz)
    pgrx_flags=()
    if [ "$mode" = debug ]; then
        outdir="$TS_ROOT/target/deb/debug"
        compress=(-Zzstd)     # a debug .so is large; xz would take a minute
        pgrx_flags=(--debug)
    fi
    pgrx_out="$outdir/pgrx"
    root="$outdir/root"
    deb="$outdir/${name}_${version}_${arch}.deb"

    log "cargo pgrx package ($mode) for PostgreSQL $pg_major ($cfg)"
    # cargo-pgrx wants its configuration to know the major; where it does not (a version built
    # from source), a temporary one that does
    home="${PGRX_HOME:-$HOME/.pgrx}"
    tmp_home=
    if ! grep -q "^pg$pg_major *=" "$home/config.toml" 2>/dev/null; then
        home="$(mktemp -d)"
        tmp_home="$home"
        printf '[configs]\npg%s = "%s"\n' "$pg_major" "$cfg" >"$home/config.toml"
    fi
    rm -rf "$pgrx_out" "$root"
    mkdir -p "$outdir"
    PGRX_HOME="$home" cargo pgrx package --pg-config "$cfg" "${pgrx_flags[@]}" --out-dir "$pgrx_out" >/dev/null

    # The same files, at the same paths, as install_extension (scripts/lib.sh) installs.
    install -d -m 755 "$root/DEBIAN" "$root$libdir" "$root$extdir" "$root/usr/share/doc/$name"
    # cargo-pgrx mirrors the pg_config's own paths under its out dir; the files are found by name
    install -m 644 "$(find "$pgrx_out" -name token_store.so | head -1)" "$root$libdir/"
    find "$pgrx_out" -path '*/extension/token_store*' -type f -exec install -m 644 -t "$root$extdir/" {} +
    install -m 644 README.md CHANGELOG.md "$root/usr/share/doc/$name/"
    cat > "$root/usr/share/doc/$name/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: token_store

Files: *
License: Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF

    description="$(sed -n 's/^description *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -1)"
    cat > "$root/DEBIAN/control" <<EOF
Package: $name
Version: $version
Architecture: $arch
Maintainer: ${DEB_MAINTAINER:-token_store developers <token_store@localhost>}
Depends: postgresql-$pg_major, libc6
Section: database
Priority: optional
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Description: $description
 token_store is a PostgreSQL $pg_major extension whose SQL functions issue, store, verify
 and revoke JSON Web Tokens; a background worker purges expired tokens. Enable it with
 shared_preload_libraries = 'token_store' and an encryption key (token_store.encryption_key),
 then CREATE EXTENSION token_store; see /usr/share/doc/$name/README.md.
EOF
    (cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum > DEBIAN/md5sums)
    chmod 644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"

    rm -f "$deb"
    dpkg-deb --root-owner-group "${compress[@]}" --build "$root" "$deb" >/dev/null
    [ -z "$tmp_home" ] || rm -rf "$tmp_home"
    log "built $deb"
    echo "$deb"
}

if [ "${#versions[@]}" = 0 ]; then
    package_one "$PG_CONFIG"
    exit 0
fi
for v in "${versions[@]}"; do
    if [ "$v" = 15 ]; then
        cfg=/usr/lib/postgresql/15/bin/pg_config
    else
        source "$TS_ROOT/scripts/build-pg.sh"
        rc=0
        cfg="$(pg_from_source "$v")" || rc=$?
        [ "$rc" = 0 ] || die "no build of PostgreSQL $v (status $rc; see above)"
    fi
    package_one "$cfg"
done
