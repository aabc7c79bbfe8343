# Shared by scripts/dev and scripts/test (sourced, not run): find PostgreSQL and Redis, or
# start private ones under ./.local/, installing the distribution's packages when missing.
# shellcheck shell=bash

ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
LOCAL="$ROOT/.local"
PRIVATE_PG_PORT=${PRIVATE_PG_PORT:-55432}
PRIVATE_REDIS_PORT=${PRIVATE_REDIS_PORT:-56379}

say() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Installs Debian packages when we can (root + apt-get); otherwise says exactly what to install.
install_packages() {
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        say "installing $*"
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    else
        die "missing $*; install them (Debian/Ubuntu: sudo apt-get install $*) and run again"
    fi
}

pg_bindir() {
    if command -v pg_ctl >/dev/null 2>&1; then dirname "$(command -v pg_ctl)"; return; fi
    # Debian keeps the server tools out of PATH.
    find /usr/lib/postgresql -maxdepth 3 -name pg_ctl -path '*/bin/*' 2>/dev/null | sort -V | tail -n 1 | xargs -r dirname
}

pg_answers() { psql "$1" -Atqc 'SELECT 1' >/dev/null 2>&1; }

# Exports DATABASE_URL pointing at a PostgreSQL server that answers. A DATABASE_URL already
# set is used as it is when its server answers; otherwise the local default server, then a
# private cluster, with database $1 in the URL.
ensure_postgres() {
    local dbname=$1
    command -v psql >/dev/null 2>&1 || install_packages postgresql-client
    if [ -n "${DATABASE_URL:-}" ]; then
        pg_answers "$(server_url "$DATABASE_URL")" && return
        say "DATABASE_URL does not answer; trying the local server, then a private one"
    fi
    local default="postgres://postgres@127.0.0.1:5432"
    if pg_answers "$default/postgres"; then
        export DATABASE_URL="$default/$dbname"
        return
    fi
    start_private_postgres
    export DATABASE_URL="postgres://postgres@127.0.0.1:$PRIVATE_PG_PORT/$dbname"
}

# The URL of the server's maintenance database (same server and user as $1).
server_url() { local url=${1%%\?*}; echo "${url%/*}/postgres"; }

# The database name in a PostgreSQL URL.
database_name() { local url=${1%%\?*}; echo "${url##*/}"; }

start_private_postgres() {
    local dir="$LOCAL/pg" bindir run=()
    bindir=$(pg_bindir)
    if [ -z "$bindir" ]; then install_packages postgresql; bindir=$(pg_bindir); fi
    [ -n "$bindir" ] || die "PostgreSQL server tools (initdb, pg_ctl) not found"
    mkdir -p "$dir"
    # PostgreSQL refuses to run as root: run it as the postgres system user.
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --home-dir "$dir" postgres
        chown -R postgres "$dir"
        run=(runuser -u postgres --)
    fi
    if pg_answers "postgres://postgres@127.0.0.1:$PRIVATE_PG_PORT/postgres"; then return; fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        say "creating a private PostgreSQL cluster in $dir"
        "${run[@]}" "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 \
            || die "initdb failed; see $dir/initdb.log"
    fi
    say "starting private PostgreSQL on 127.0.0.1:$PRIVATE_PG_PORT"
    "${run[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
        -o "-p $PRIVATE_PG_PORT -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null \
        || die "PostgreSQL did not start; see $dir/server.log"
}

# Creates the database named in DATABASE_URL when it does not exist yet.
ensure_database() {
    local server name
    server=$(server_url "$DATABASE_URL")
    name=$(database_name "$DATABASE_URL")
    if ! psql "$server" -Atqc "SELECT 1 FROM pg_database WHERE datname = '$name'" | grep -q 1; then
        say "creating database $name"
        psql "$server" -qc "CREATE DATABASE \"$name\"" >/dev/null
    fi
}

redis_answers() { [ "$(redis-cli -u "$1" ping 2>/dev/null)" = PONG ]; }

# Exports REDIS_URL pointing at a Redis server that answers.
ensure_redis() {
    command -v redis-cli >/dev/null 2>&1 || install_packages redis-server
    local candidate=${REDIS_URL:-redis://127.0.0.1:6379}
    if redis_answers "$candidate"; then export REDIS_URL=$candidate; return; fi
    local url="redis://127.0.0.1:$PRIVATE_REDIS_PORT"
    if ! redis_answers "$url"; then
        command -v redis-server >/dev/null 2>&1 || install_packages redis-server
        mkdir -p "$LOCAL/redis"
        say "starting private Redis on 127.0.0.1:$PRIVATE_REDIS_PORT"
        redis-server --port "$PRIVATE_REDIS_PORT" --bind 127.0.0.1 --daemonize yes --save '' \
            --appendonly no --dir "$LOCAL/redis" --logfile "$LOCAL/redis/server.log" \
            --pidfile "$LOCAL/redis/redis.pid" >/dev/null
        for _ in $(seq 50); do redis_answers "$url" && break; sleep 0.1; done
        redis_answers "$url" || die "Redis did not start; see $LOCAL/redis/server.log"
    fi
    export REDIS_URL=$url
}

# What tests/faults.rs needs to run private PostgreSQL and Redis servers it can stop and
# start: PostgreSQL's server tools (named in COMPANION_PG_BINDIR), a `postgres` system user
# to run them when we are root, and redis-server.
ensure_fault_tools() {
    local bindir
    bindir=$(pg_bindir)
    if [ -z "$bindir" ]; then install_packages postgresql; bindir=$(pg_bindir); fi
    [ -n "$bindir" ] || die "PostgreSQL server tools (initdb, pg_ctl) not found"
    export COMPANION_PG_BINDIR=$bindir
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        useradd --system --no-create-home postgres
    fi
    command -v redis-server >/dev/null 2>&1 || install_packages redis-server
}

# promtool, which checks and unit-tests the Prometheus rules (scripts/monitoring).
ensure_promtool() {
    command -v promtool >/dev/null 2>&1 || install_packages --no-install-recommends prometheus
    command -v promtool >/dev/null 2>&1 || die "promtool not found (Debian package prometheus)"
}

ensure_cargo() {
    command -v cargo >/dev/null 2>&1 && return
    [ -x "$HOME/.cargo/bin/cargo" ] && { export PATH="$HOME/.cargo/bin:$PATH"; return; }
    die "cargo not found: install the Rust toolchain (https://rustup.rs) and run again"
}

# The S3-compatible server the media tests run against: s3s-fs from crates.io, built once
# into the build cache (beside the compiled crates, so CI's cache keeps it) and named in
# COMPANION_S3S_FS. It checks signatures and presigned URLs' expiry as S3 does.
S3S_FS_VERSION=0.14.1
ensure_s3s_fs() {
    local root="${CARGO_TARGET_DIR:-$ROOT/target}/tools"
    local bin="$root/bin/s3s-fs"
    if ! "$bin" --version 2>/dev/null | grep -q "$S3S_FS_VERSION"; then
        say "installing s3s-fs $S3S_FS_VERSION (the tests' S3 server) into $root"
        cargo install --quiet --locked --root "$root" --features binary \
            --version "$S3S_FS_VERSION" s3s-fs
    fi
    export COMPANION_S3S_FS=$bin
}
