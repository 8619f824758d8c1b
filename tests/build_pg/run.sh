#!/usr/bin/env bash
# Checks scripts/build-pg.sh's bookkeeping without compiling PostgreSQL: tiny fake "postgresql-9x"
# tarballs whose configure writes a Makefile that installs stub files where a real build puts them.
# Covers: build then reuse, a dir without the stamp is rebuilt from scratch, a failed build leaves no
# stamp and exits 1, a tarball that does not match SHA256SUMS (or is not listed) exits 1 before
# building, usage errors exit 2, and a version with no tarball and no known suite is skipped (3).
# Needs no network and no root; takes a few seconds.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="$ROOT/scripts/build-pg.sh"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export TS_PG_SRC_DIR="$WORK/src" TS_PG_CACHE="$WORK/cache"
mkdir -p "$TS_PG_SRC_DIR"
fails=0

check() { # check NAME EXPECTED ACTUAL
    if [ "$2" = "$3" ]; then echo "ok   $1"; else echo "FAIL $1: expected '$2', got '$3'"; fails=$((fails + 1)); fi
}

# fake_tarball MAJOR VERSION GOOD: a source tree whose build installs stubs (GOOD=1) or whose
# configure fails (GOOD=0), listed in SHA256SUMS.
fake_tarball() {
    local major="$1" version="$2" good="$3" t="$WORK/tree/postgresql-$2"
    rm -rf "$WORK/tree" && mkdir -p "$t/contrib/pgcrypto"
    if [ "$good" = 1 ]; then
        cat >"$t/configure" <<'EOF'
#!/bin/sh
prefix=${1#--prefix=}
cat >Makefile <<MK
all:
	@echo built
install:
	mkdir -p $prefix/bin $prefix/lib/postgresql/pgxs/src/test/regress $prefix/include/postgresql/server
	for b in pg_config postgres initdb pg_ctl psql pgbench pg_dump pg_basebackup; do touch $prefix/bin/\$\$b; chmod +x $prefix/bin/\$\$b; done
	touch $prefix/lib/postgresql/pgxs/src/test/regress/pg_regress $prefix/include/postgresql/server/postgres.h
	echo "build \$\$\$\$" >$prefix/build-id
MK
printf 'all:\ninstall:\n\tmkdir -p %s/share/postgresql/extension\n\ttouch %s/share/postgresql/extension/pgcrypto.control\n' "$prefix" "$prefix" >contrib/pgcrypto/Makefile
EOF
    else
        printf '#!/bin/sh\necho "configure: error: fake failure"\nexit 1\n' >"$t/configure"
    fi
    chmod +x "$t/configure"
    tar -C "$WORK/tree" -cjf "$TS_PG_SRC_DIR/postgresql-${major}_$version.orig.tar.bz2" "postgresql-$version"
    (cd "$TS_PG_SRC_DIR" && sha256sum postgresql-*.orig.tar.bz2 >SHA256SUMS)
}

fake_tarball 98 98.1 1
out="$("$BUILD" 98 2>"$WORK/err")"; rc=$?
sha="$(sha256sum "$TS_PG_SRC_DIR/postgresql-98_98.1.orig.tar.bz2" | cut -c1-12)"
check "first run builds" "0 $TS_PG_CACHE/pg-98.1-$sha/bin/pg_config" "$rc $out"
check "stamp written" yes "$([ -f "$TS_PG_CACHE/pg-98.1-$sha/.token_store-build-complete" ] && echo yes)"
id1="$(cat "$TS_PG_CACHE/pg-98.1-$sha/build-id")"

out="$("$BUILD" 98 2>"$WORK/err")"; rc=$?
check "second run reuses" "0 $TS_PG_CACHE/pg-98.1-$sha/bin/pg_config" "$rc $out"
check "second run did not build" "$id1" "$(cat "$TS_PG_CACHE/pg-98.1-$sha/build-id")"
check "second run says cached" 1 "$(grep -c 'cached build' "$WORK/err")"

rm "$TS_PG_CACHE/pg-98.1-$sha/.token_store-build-complete"
touch "$TS_PG_CACHE/pg-98.1-$sha/leftover"
out="$("$BUILD" 98 2>"$WORK/err")"; rc=$?
check "dir without stamp rebuilt" 0 "$rc"
check "rebuilt dir starts empty" no "$([ -e "$TS_PG_CACHE/pg-98.1-$sha/leftover" ] && echo yes || echo no)"
check "rebuilt dir has a stamp" yes "$([ -f "$TS_PG_CACHE/pg-98.1-$sha/.token_store-build-complete" ] && echo yes)"

source "$BUILD"
out="$(pg_from_source 98 2>/dev/null)"; rc=$?
check "sourced pg_from_source" "0 $TS_PG_CACHE/pg-98.1-$sha/bin/pg_config" "$rc $out"
# as scripts that use `set -euo pipefail` (scripts/lib.sh) source it
out="$(set -euo pipefail; source "$BUILD"; cfg="$(pg_from_source 98 2>/dev/null)"; echo "got $cfg")"
check "sourced under set -euo pipefail" "got $TS_PG_CACHE/pg-98.1-$sha/bin/pg_config" "$out"
out="$(set -euo pipefail; source "$BUILD"; rc=0; pg_from_source 16 2>/dev/null || rc=$?; echo "rc $rc")"
check "skip under set -euo pipefail returns 3" "rc 3" "$out"

fake_tarball 97 97.0 0
"$BUILD" 97 >/dev/null 2>"$WORK/err"; rc=$?
check "failed build exits 1" 1 "$rc"
check "failed build shows the log" 1 "$(grep -c 'fake failure' "$WORK/err")"
check "failed build leaves no stamp" no "$(ls "$TS_PG_CACHE"/pg-97.0-*/.token_store-build-complete >/dev/null 2>&1 && echo yes || echo no)"

echo tampered >>"$TS_PG_SRC_DIR/postgresql-98_98.1.orig.tar.bz2"
"$BUILD" 98 >/dev/null 2>"$WORK/err"; rc=$?
check "checksum mismatch exits 1" 1 "$rc"
check "checksum mismatch named" 1 "$(grep -c 'does not match its checksum' "$WORK/err")"
check "checksum mismatch builds nothing" 1 "$(ls -d "$TS_PG_CACHE"/pg-98.1-* | wc -l)"

fake_tarball 96 96.0 1
grep -v postgresql-96 "$TS_PG_SRC_DIR/SHA256SUMS" >"$WORK/sums" && mv "$WORK/sums" "$TS_PG_SRC_DIR/SHA256SUMS"
"$BUILD" 96 >/dev/null 2>"$WORK/err"; rc=$?
check "unlisted tarball exits 1" 1 "$rc"

"$BUILD" >/dev/null 2>&1; check "no argument exits 2" 2 "$?"
"$BUILD" x17 >/dev/null 2>&1; check "bad major exits 2" 2 "$?"
"$BUILD" 16 >/dev/null 2>"$WORK/err"; rc=$?
check "no source for 16 exits 3" 3 "$rc"
check "skip says why" 1 "$(grep -c 'SKIP PostgreSQL 16' "$WORK/err")"

[ "$fails" = 0 ] && echo "build-pg.sh: all checks passed" || { echo "build-pg.sh: $fails check(s) failed"; exit 1; }
