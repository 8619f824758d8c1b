#!/usr/bin/env bash
# Builds an installable Debian/Ubuntu package of token_store for the PostgreSQL that $PG_CONFIG
# names (default: PostgreSQL 15), from `cargo pgrx package` output:
#
#   scripts/package.sh            release build -> target/deb/postgresql-15-token-store_<version>_<arch>.deb
#   scripts/package.sh --debug    debug build   -> target/deb/debug/... (what scripts/test.sh installs;
#                                 tests/client/test_package.py checks it against the installed files)
#
# Install it with `apt install ./target/deb/postgresql-15-token-store_<version>_<arch>.deb`.
# DEB_MAINTAINER overrides the Maintainer field.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$TS_ROOT"

mode=release
case "${1:-}" in
    "") ;;
    --debug) mode=debug ;;
    *) echo "usage: $0 [--debug]" >&2; exit 2 ;;
esac

for tool in dpkg-deb dpkg cargo; do
    command -v "$tool" >/dev/null || { echo "$tool is missing (Debian/Ubuntu: dpkg; Rust: rustup)" >&2; exit 1; }
done
cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION" ||
    { echo "cargo-pgrx $PGRX_VERSION is missing: cargo install cargo-pgrx --version $PGRX_VERSION --locked" >&2; exit 1; }

version="$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -1)"
[ -n "$version" ] || { echo "no version in Cargo.toml" >&2; exit 1; }
pg_major="$("$PG_CONFIG" --version | sed -n 's/^PostgreSQL \([0-9]*\).*/\1/p')"
arch="$(dpkg --print-architecture)"
name="postgresql-$pg_major-token-store"
libdir="$("$PG_CONFIG" --pkglibdir)"
extdir="$("$PG_CONFIG" --sharedir)/extension"

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

log "cargo pgrx package ($mode) for PostgreSQL $pg_major"
rm -rf "$pgrx_out" "$root"
mkdir -p "$outdir"
cargo pgrx package --pg-config "$PG_CONFIG" "${pgrx_flags[@]}" --out-dir "$pgrx_out" >/dev/null

# The same files, at the same paths, as install_extension (scripts/lib.sh) installs.
install -d -m 755 "$root/DEBIAN" "$root$libdir" "$root$extdir" "$root/usr/share/doc/$name"
install -m 644 "$pgrx_out$libdir/token_store.so" "$root$libdir/"
install -m 644 "$pgrx_out$extdir"/token_store* "$root$extdir/"
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
log "built $deb"
echo "$deb"
