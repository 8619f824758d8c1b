#!/usr/bin/env bash
# Proves the README's two commands on a fresh Debian 12: makes a minimal Debian 12 root with
# debootstrap (--variant=minbase bookworm), gives it only what the README assumes (this machine's
# Rust toolchain, git, CA certificates, and this machine's package-client settings: apt sources and
# proxy settings, ~/.cargo/config.toml, pip and npm configuration, /etc/resolv.conf), clones this
# checkout's HEAD into /root/token_store, and runs, as root inside the root, the commands of the
# README's Quick start (scripts/demo.sh, then scripts/test.sh). Then it checks that the demo cluster
# is still up, prints how long each command took, stops the cluster, unmounts everything and exits
# non-zero if anything failed. Slow: about 30-40 min on 2 cores (everything is built from nothing).
#
#   sudo scripts/fresh-debian.sh [DIR]    DIR: where to build the root (default: a new directory
#                                         /var/tmp/token_store-fresh.*, removed at the end unless
#                                         TS_KEEP_TMP=1)
#
# Commits only: the clone is of HEAD. The root shares this machine's network, so the ports the
# scripts use inside it are this machine's: TS_DEMO_PORT, TS_TEST_PORT, TS_PGRX_BASE_TESTING_PORT,
# TS_PGBOUNCER_PORT, TS_FUZZ_SECONDS and TS_KEEP_TMP are passed on to them. Needs root (debootstrap,
# chroot, mount); installs debootstrap with apt-get when it is missing.
set -euo pipefail
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf '\033[1m==> [%d:%02d] %s\033[0m\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, chroot and mount need it)"
[ "$#" -le 1 ] || die "usage: $0 [DIR]"
USER_DIR=0
if [ "$#" = 1 ]; then
    USER_DIR=1
    ROOT="$1"
    [ ! -e "$ROOT" ] || [ -z "$(ls -A "$ROOT")" ] || die "$ROOT is not empty"
    mkdir -p "$ROOT"
else
    ROOT="$(mktemp -d /var/tmp/token_store-fresh.XXXXXXXX)"
fi
ROOT="$(cd "$ROOT" && pwd)"
chmod 755 "$ROOT"
[ -z "$(git -C "$SRC" status --porcelain --untracked-files=no)" ] ||
    log "warning: the checkout has uncommitted changes; the fresh root gets HEAD only"

MOUNTS=()
TIMES=()
mount_in() {   # mount_in TARGET MOUNT-ARGS...: mount, and remember it for the cleanup
    local target="$ROOT$1"
    shift
    mkdir -p "$target"
    mount "$@" "$target"
    MOUNTS+=("$target")
}
in_root() {    # in_root COMMAND: run a shell command as root inside the root, in a login shell
    chroot "$ROOT" /usr/bin/env -i HOME=/root TERM="${TERM:-dumb}" LANG=C.UTF-8 \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "${PASS_ENV[@]}" \
        /bin/bash -lc "$1"
}
cleanup() {
    local rc=$? i pid
    set +e
    if [ -f "$ROOT/etc/debian_version" ]; then
        # the demo cluster, and anything else still running inside the root (by pid)
        in_root 'cd /root/token_store 2>/dev/null && [ -e .cluster ] &&
                 runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$(readlink -f .cluster)/data" -m fast -w stop' \
            >/dev/null 2>&1
        for pid in $(ls /proc | grep -E '^[0-9]+$'); do
            [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$ROOT" ] && kill -TERM "$pid" 2>/dev/null
        done
        sleep 2
        for pid in $(ls /proc | grep -E '^[0-9]+$'); do
            [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$ROOT" ] && kill -KILL "$pid" 2>/dev/null
        done
    fi
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTS[$i]}" 2>/dev/null || umount -l "${MOUNTS[$i]}"
    done
    if [ "${#TIMES[@]}" -gt 0 ]; then printf '%s\n' "${TIMES[@]}" >&2; fi
    if [ "$rc" != 0 ]; then log "FAILED (exit $rc); the root is $ROOT"; fi
    if [ "${TS_KEEP_TMP:-0}" = 1 ] || [ "$USER_DIR" = 1 ]; then
        log "kept $ROOT"
    elif ! grep -q " $ROOT/" /proc/mounts; then
        rm -rf "$ROOT"
    else
        log "something is still mounted under $ROOT; not removing it"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

timed() {      # timed LABEL COMMAND: run COMMAND inside the root, record its duration
    local label="$1" start=$SECONDS rc=0
    log "$label"
    in_root "$2" || rc=$?
    TIMES+=("$(printf '%-28s %4d s (%d:%02d)%s' "$label:" $((SECONDS - start)) $(((SECONDS - start) / 60)) \
        $(((SECONDS - start) % 60)) "$([ "$rc" = 0 ] || echo "  FAILED, exit $rc")")")
    return $rc
}

# --- the README's commands: the sh block of the "Quick start" section ----------------------------
mapfile -t COMMANDS < <(awk '/^## Quick start/ { q = 1; next } /^## / { q = 0 }
    q && /^```sh/ { b = 1; next } b && /^```/ { exit } b' "$SRC/README.md" | sed 's/#.*//; s/[[:space:]]*$//' | grep .)
[ "${COMMANDS[*]}" = "scripts/demo.sh scripts/test.sh" ] ||
    die "the README's Quick start commands are not scripts/demo.sh and scripts/test.sh: ${COMMANDS[*]}"

PASS_ENV=()
for v in TS_DEMO_PORT TS_TEST_PORT TS_PGRX_BASE_TESTING_PORT TS_PGBOUNCER_PORT TS_FUZZ_SECONDS TS_KEEP_TMP; do
    [ -z "${!v:-}" ] || PASS_ENV+=("$v=${!v}")
done

# --- a minimal Debian 12 --------------------------------------------------------------------------
if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap on this machine"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
# the Debian mirror this machine's apt uses (from its configuration, at run time)
MIRROR="$(apt-cache policy | awk '$3 ~ /^bookworm\/main$/ { print $2; exit }')"
[ -n "$MIRROR" ] || MIRROR="$(apt-cache policy | awk '$3 ~ /^[a-z]+\/main$/ && $3 !~ /-(security|updates|backports)\// { print $2; exit }')"
[ -n "$MIRROR" ] || die "no Debian mirror in this machine's apt configuration (apt-cache policy)"
log "debootstrap --variant=minbase bookworm $ROOT $MIRROR (a few minutes)"
stage_start=$SECONDS
debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" > "$ROOT.debootstrap.log" 2>&1 ||
    { tail -30 "$ROOT.debootstrap.log" >&2; die "debootstrap failed (log: $ROOT.debootstrap.log)"; }
rm -f "$ROOT.debootstrap.log"
TIMES+=("$(printf '%-28s %4d s' "debootstrap:" $((SECONDS - stage_start)))")

# No service may start inside the root: it shares this machine's network and processes (the Debian
# postgresql package would start a cluster on port 5432). The scripts start their own clusters.
printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"
chmod 755 "$ROOT/usr/sbin/policy-rc.d"

mount_in /proc -t proc proc
mount_in /sys -t sysfs sysfs
mount_in /dev --bind /dev
mount_in /dev/pts --bind /dev/pts
mount_in /dev/shm -t tmpfs -o mode=1777,nosuid,nodev shm   # the root's own POSIX shared memory

# --- what the README assumes: package-client settings, Rust, git, CA certificates -------------------
log "copying this machine's package-client settings and Rust toolchain into the root"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
# this machine's apt sources replace the one line debootstrap wrote (same mirror, plus updates and
# security), when it has any
sources=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && sources+=("$f")
done
if [ "${#sources[@]}" -gt 0 ]; then
    rm -f "$ROOT/etc/apt/sources.list"
    for f in "${sources[@]}"; do cp "$f" "$ROOT$f"; done
fi
for f in /etc/apt/apt.conf.d/*; do   # proxies, validity checks: the Acquire settings
    [ -f "$f" ] && grep -qi '^[[:space:]]*Acquire' "$f" && cp "$f" "$ROOT$f"
done
for f in /etc/pip.conf /etc/npmrc /root/.npmrc /root/.config/pip/pip.conf /root/.pip/pip.conf; do
    [ -f "$f" ] && { mkdir -p "$ROOT$(dirname "$f")"; cp "$f" "$ROOT$f"; }
done
CARGO_HOME_SRC="${CARGO_HOME:-$HOME/.cargo}"
RUSTUP_HOME_SRC="${RUSTUP_HOME:-$HOME/.rustup}"
[ -x "$CARGO_HOME_SRC/bin/rustup" ] || die "no rustup in $CARGO_HOME_SRC/bin: install Rust with rustup first"
cp -a "$RUSTUP_HOME_SRC" "$ROOT/root/.rustup"
mkdir -p "$ROOT/root/.cargo/bin"
cp -a "$CARGO_HOME_SRC/bin/rustup" "$ROOT/root/.cargo/bin/"
for f in "$CARGO_HOME_SRC"/bin/*; do   # rustup's proxies (cargo, rustc, ...), not installed tools
    [ -L "$f" ] && [ "$(readlink "$f")" = rustup ] && cp -a "$f" "$ROOT/root/.cargo/bin/"
done
[ -f "$CARGO_HOME_SRC/env" ] && cp "$CARGO_HOME_SRC/env" "$ROOT/root/.cargo/env"
[ -f "$CARGO_HOME_SRC/config.toml" ] && cp "$CARGO_HOME_SRC/config.toml" "$ROOT/root/.cargo/"
# as rustup's installer does
for f in .profile .bashrc; do echo '. "$HOME/.cargo/env"' >> "$ROOT/root/$f"; done

in_root 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq git ca-certificates >/dev/null'
in_root 'cargo --version && rustc --version && git --version'

# --- the checkout ----------------------------------------------------------------------------------
branch="$(git -C "$SRC" symbolic-ref -q --short HEAD || echo HEAD)"
git -C "$SRC" bundle create "$ROOT/tmp/checkout.bundle" HEAD $( [ "$branch" = HEAD ] || echo "$branch" ) 2>/dev/null
in_root "git clone -q $( [ "$branch" = HEAD ] || echo "-b $branch" ) /tmp/checkout.bundle /root/token_store && rm /tmp/checkout.bundle"
log "cloned $(git -C "$SRC" rev-parse --short HEAD) ($branch) into /root/token_store"

# --- the README's commands, in order ------------------------------------------------------------------
for cmd in "${COMMANDS[@]}"; do
    timed "$cmd" "cd /root/token_store && $cmd"
done

log "is the demo cluster still up?"
in_root 'cd /root/token_store && runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$(readlink -f .cluster)/data" status' ||
    die "the demo cluster (.cluster) is not running after scripts/test.sh"
log "passed: the README's commands work on a fresh Debian 12"
