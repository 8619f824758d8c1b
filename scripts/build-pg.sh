#!/usr/bin/env bash
# Builds upstream PostgreSQL MAJOR (17, 18, ...) from source, once, into a cache outside the clone,
# for the version test matrix (Debian 12 packages PostgreSQL 15 only):
#
#   scripts/build-pg.sh 17        prints the pg_config path of the cached build on stdout
#   source scripts/build-pg.sh; pg_from_source 18    the same as a function (progress on stderr)
#
# Source tarball, first found of:
#   1. $TS_PG_SRC_DIR (default: ../shared/pg-src next to the clone): postgresql-MAJOR_*.orig.tar.bz2,
#      checked against the SHA256SUMS file in that folder;
#   2. $TS_PG_CACHE/src: a tarball an earlier run downloaded (with the checksum apt verified);
#   3. `apt-get source --tar-only postgresql-MAJOR` from a deb-src entry (sid for 18, trixie for 17;
#      $TS_PG_SUITE overrides) written into a private apt configuration under the cache; the mirror is
#      the one the host's own apt sources use for its release. The system's apt state is not touched.
# Cache: $TS_PG_CACHE (default /var/cache/token_store)/pg-<version>-<first 12 hex of the sha256>/, a
# relocatable install (copy it elsewhere with cp -a and its pg_config reports the copy's dirs). It
# holds the server, its headers, the client tools (pgbench, pg_dump, ...), contrib's pgcrypto and
# pgxs's pg_regress. A stamp written last marks a complete build; a directory without it is rebuilt.
#
# Exit status: 0 built or reused; 3 no source for MAJOR (skipped, the reason on stderr); 2 usage;
# 1 anything else (a checksum mismatch, a failed build: the log's tail is printed).

TS_PG_SKIP=3
TS_PG_STAMP=.token_store-build-complete

_pg_log() { printf '==> [pg %s] %s\n' "${_PG_MAJOR:-?}" "$*" >&2; }

_pg_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# The build tools and libraries configure needs with the flags below, installed where missing.
_pg_build_deps() {
    local need=() p
    command -v gcc >/dev/null && command -v make >/dev/null || need+=(build-essential)
    command -v bison >/dev/null || need+=(bison)
    command -v flex >/dev/null || need+=(flex)
    command -v pkg-config >/dev/null || need+=(pkg-config)
    for p in libssl-dev zlib1g-dev; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
    done
    [ "${#need[@]}" -eq 0 ] && return 0
    _pg_log "installing build dependencies: ${need[*]}"
    _pg_root apt-get update -qq &&
        _pg_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
}

# The URI of the host's Debian archive: the apt source (one-line or deb822) that serves the host's
# own release (VERSION_CODENAME), read at run time so that no mirror name lives in the repository.
_pg_host_mirror() {
    local codename f
    codename="$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")"
    [ -n "$codename" ] || return 1
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk -v c="$codename" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                              if ($(i + 1) == c) { print $i; exit } }' "$f"
    done | head -1 | grep . && return 0
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        # deb822 stanzas are separated by blank lines; a stanza may list several URIs and suites.
        awk -v c="$codename" 'BEGIN { RS = ""; FS = "\n" }
            { uri = ""; ok = 0; deb = 0
              for (i = 1; i <= NF; i++) {
                  if ($i ~ /^URIs:/) { split(substr($i, 6), u, " "); for (k in u) if (u[k] != "") { uri = u[k]; break } }
                  if ($i ~ /^Suites:/) { n = split(substr($i, 8), s, " "); for (k = 1; k <= n; k++) if (s[k] == c) ok = 1 }
                  if ($i ~ /^Types:/ && $i ~ /(^|[ :])deb( |$)/) deb = 1
              }
              if (ok && deb && uri != "") { print uri; exit } }' "$f"
    done | head -1 | grep .
}

# _pg_fetch_apt MAJOR DESTDIR: download postgresql-MAJOR's upstream tarball with apt-get source into
# DESTDIR/src and record its sha256 there. Prints the tarball path; returns 3 with the reason on stderr.
_pg_fetch_apt() {
    local major="$1" cache="$2" suite mirror apt out tarball
    case "$major" in
        18) suite=sid ;;
        17) suite=trixie ;;
        *) suite="" ;;
    esac
    suite="${TS_PG_SUITE:-$suite}"
    if [ -z "$suite" ]; then
        _pg_log "SKIP PostgreSQL $major: no tarball and no Debian suite known to ship postgresql-$major"
        return "$TS_PG_SKIP"
    fi
    command -v apt-get >/dev/null || { _pg_log "SKIP PostgreSQL $major: no tarball and no apt-get"; return "$TS_PG_SKIP"; }
    if ! mirror="$(_pg_host_mirror)"; then
        _pg_log "SKIP PostgreSQL $major: no tarball, and no Debian mirror found in the host's apt sources"
        return "$TS_PG_SKIP"
    fi
    apt="$cache/apt"
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$cache/src"
    printf 'deb-src %s %s main\n' "$mirror" "$suite" >"$apt/sources.list"
    local opts=(-o "Dir::Etc::sourcelist=$apt/sources.list" -o Dir::Etc::sourceparts=-
                -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o "Dir::Cache::pkgcache="
                -o "Dir::Cache::srcpkgcache=" -o APT::Sandbox::User=root)
    _pg_log "no tarball for PostgreSQL $major: fetching postgresql-$major from $suite (deb-src $mirror, private apt state in $apt)"
    if ! out="$(apt-get "${opts[@]}" -q update 2>&1)" || grep -q '^[WE]:' <<<"$out"; then
        _pg_log "SKIP PostgreSQL $major: apt-get update of the private deb-src $suite entry failed:"
        sed 's/^/    /' <<<"$out" | tail -5 >&2
        return "$TS_PG_SKIP"
    fi
    rm -rf "$apt/download" && mkdir -p "$apt/download"
    # apt checks the tarball against the checksum in the signed Sources index.
    if ! out="$(cd "$apt/download" && apt-get "${opts[@]}" -q source --tar-only --download-only "postgresql-$major" 2>&1)"; then
        _pg_log "SKIP PostgreSQL $major: apt-get source --tar-only postgresql-$major from $suite failed:"
        sed 's/^/    /' <<<"$out" | tail -5 >&2
        return "$TS_PG_SKIP"
    fi
    tarball="$(ls "$apt/download"/postgresql-"$major"_*.orig.tar.* 2>/dev/null | head -1)"
    if [ -z "$tarball" ]; then
        _pg_log "SKIP PostgreSQL $major: apt-get source gave no postgresql-${major}_*.orig.tar.* file"
        return "$TS_PG_SKIP"
    fi
    mv "$tarball" "$cache/src/"
    tarball="$cache/src/$(basename "$tarball")"
    (cd "$cache/src" && sha256sum "$(basename "$tarball")" >>SHA256SUMS)
    rm -rf "$apt/download"
    echo "$tarball"
}

# _pg_find_tarball MAJOR SRCDIR: the newest postgresql-MAJOR_*.orig.tar.* in SRCDIR that its
# SHA256SUMS lists. Returns 1 when there is none; exits the caller's check on a mismatch (status 4).
_pg_find_tarball() {
    local major="$1" dir="$2" t line
    [ -d "$dir" ] || return 1
    t="$(ls "$dir"/postgresql-"$major"_*.orig.tar.* 2>/dev/null | sort -V | tail -1)"
    [ -n "$t" ] || return 1
    line="$(awk -v f="$(basename "$t")" '$2 == f || $2 == "*" f { print; exit }' "$dir/SHA256SUMS" 2>/dev/null)"
    if [ -z "$line" ]; then
        _pg_log "$t is not listed in $dir/SHA256SUMS"
        return 4
    fi
    _pg_log "checking $(basename "$t") against $dir/SHA256SUMS"
    if ! (cd "$dir" && sha256sum -c --quiet - <<<"$line" >&2); then
        _pg_log "$t does not match its checksum in $dir/SHA256SUMS"
        return 4
    fi
    echo "$t"
}

# _pg_step LOG CMD...: run CMD with its output appended to LOG, printing a line each minute while it
# runs (a build is silent for minutes otherwise).
_pg_step() {
    local logf="$1" start=$SECONDS pid rc=0 n=0
    shift
    "$@" >>"$logf" 2>&1 &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        n=$((n + 1))
        [ $((n % 60)) = 0 ] && printf '==> [pg %s]     ... still running (%d min; %d objects compiled so far)\n' \
            "${_PG_MAJOR:-?}" $(((SECONDS - start) / 60)) "$(grep -c ' -o [^ ]*\.o ' "$logf")" >&2
    done
    wait "$pid" || rc=$?
    return $rc
}

# pg_from_source MAJOR: prints the pg_config of a cached build of PostgreSQL MAJOR, building it first
# if needed. Returns 0, 3 (skipped: no source) or 1 (failure).
pg_from_source() {
    local _PG_MAJOR="${1:-}"
    local major="$_PG_MAJOR" root srcdir cache tarball rc sha version dir build logf fd t0
    case "$major" in
        '' | *[!0-9]*) echo "usage: pg_from_source MAJOR (e.g. 17 or 18)" >&2; return 2 ;;
    esac
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    srcdir="${TS_PG_SRC_DIR:-$(dirname "$root")/shared/pg-src}"
    cache="${TS_PG_CACHE:-/var/cache/token_store}"
    if ! mkdir -p "$cache" 2>/dev/null; then
        _pg_root mkdir -p "$cache" && _pg_root chown "$(id -u):$(id -g)" "$cache" || return 1
    fi

    rc=0
    tarball="$(_pg_find_tarball "$major" "$srcdir")" || rc=$?
    [ "$rc" = 4 ] && return 1
    if [ "$rc" != 0 ]; then
        rc=0
        tarball="$(_pg_find_tarball "$major" "$cache/src")" || rc=$?
        [ "$rc" = 4 ] && return 1
        if [ "$rc" != 0 ]; then
            [ -d "$srcdir" ] || _pg_log "no source folder $srcdir"
            tarball="$(_pg_fetch_apt "$major" "$cache")" || return $?
        fi
    fi
    sha="$(sha256sum "$tarball" | cut -c1-12)"
    version="$(basename "$tarball" | sed -n 's/^postgresql-[0-9]*_\([0-9][0-9.]*\)\.orig\.tar\..*$/\1/p')"
    [ -n "$version" ] || { _pg_log "cannot read a version from $(basename "$tarball")"; return 1; }
    dir="$cache/pg-$version-$sha"
    if [ -f "$dir/$TS_PG_STAMP" ] && [ -x "$dir/bin/pg_config" ]; then
        _pg_log "PostgreSQL $version: cached build $dir"
        echo "$dir/bin/pg_config"
        return 0
    fi

    # One builder per tarball at a time; whoever waits reuses the finished build.
    exec {fd}>"$cache/.pg-$version-$sha.lock"
    if ! flock -n "$fd"; then
        _pg_log "another run is building PostgreSQL $version; waiting for it"
        flock "$fd"
    fi
    if [ -f "$dir/$TS_PG_STAMP" ] && [ -x "$dir/bin/pg_config" ]; then
        exec {fd}>&-
        _pg_log "PostgreSQL $version: cached build $dir"
        echo "$dir/bin/pg_config"
        return 0
    fi
    _pg_build_deps || { exec {fd}>&-; return 1; }

    build="$cache/build-$version-$sha"
    logf="$cache/build-$version-$sha.log"
    rm -rf "$dir" "$build"
    mkdir -p "$build"
    : >"$logf"
    t0=$SECONDS
    _pg_log "building PostgreSQL $version from $(basename "$tarball") into $dir (several minutes; log: $logf)"
    rc=0
    (
        # Every step ends in `|| exit 1`: set -e does not apply in a subshell whose status is tested.
        cd "$build" || exit 1
        printf '\n### unpack\n' >>"$logf"
        tar -xf "$tarball" --strip-components=1 >>"$logf" 2>&1 || exit 1
        printf '\n### configure\n' >>"$logf"
        echo "==> [pg $major] configure" >&2
        # --with-openssl: contrib/pgcrypto is only built with OpenSSL. No ICU, readline, NLS, LLVM.
        _pg_step "$logf" ./configure --prefix="$dir" --without-icu --without-readline --with-openssl \
            --with-zlib || exit 1
        echo "==> [pg $major] make: server, client tools, pg_regress ($(nproc) jobs)" >&2
        printf '\n### make\n' >>"$logf"
        _pg_step "$logf" make -j"$(nproc)" || exit 1
        echo "==> [pg $major] make: contrib/pgcrypto" >&2
        _pg_step "$logf" make -j"$(nproc)" -C contrib/pgcrypto || exit 1
        echo "==> [pg $major] install" >&2
        printf '\n### install\n' >>"$logf"
        _pg_step "$logf" make install || exit 1
        _pg_step "$logf" make -C contrib/pgcrypto install || exit 1
        # What the test tiers rely on, checked before the build is called complete. A prefix without
        # "postgres" in it gets lib/postgresql, share/postgresql and include/postgresql.
        for f in bin/pg_config bin/postgres bin/initdb bin/pg_ctl bin/psql bin/pgbench bin/pg_dump \
                 bin/pg_basebackup lib/pgxs/src/test/regress/pg_regress include/server/postgres.h \
                 share/extension/pgcrypto.control; do
            [ -e "$dir/$f" ] || [ -e "$dir/$(sed 's#^\(lib\|share\|include\)/#\1/postgresql/#' <<<"$f")" ] ||
                { echo "missing after install: $f" >>"$logf"; exit 1; }
        done
        printf '%s %s\n' "$(basename "$tarball")" "$(sha256sum "$tarball" | cut -d' ' -f1)" \
            >"$dir/$TS_PG_STAMP" || exit 1
    ) || rc=$?
    if [ "$rc" != 0 ]; then
        exec {fd}>&-
        _pg_log "building PostgreSQL $version FAILED after $((SECONDS - t0))s; the log ends with:"
        tail -30 "$logf" >&2
        rm -f "$dir/$TS_PG_STAMP"
        return 1
    fi
    rm -rf "$build"
    exec {fd}>&-
    _pg_log "PostgreSQL $version built in $((SECONDS - t0))s: $dir"
    echo "$dir/bin/pg_config"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -uo pipefail
    [ "$#" = 1 ] || { echo "usage: $0 MAJOR   (e.g. 17 or 18)" >&2; exit 2; }
    pg_from_source "$1"
    exit $?
fi
