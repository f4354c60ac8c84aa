# Sourced by scripts/run-tests: find or install Chromium, coturn, nginx and Prometheus, find or start Redis and PostgreSQL.
# Exports CHROMIUM_PATH, TURNSERVER_PATH, NGINX_PATH, PROMETHEUS_PATH, TEST_REDIS_URL, TEST_POSTGRES_URL;
# servers started here are stopped on exit.

say() { printf '\033[1m[test-env]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[test-env] %s\033[0m\n' "$*" >&2; exit 1; }
can_apt() { [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; }
apt_install() {
  can_apt || return 1
  say "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Install packages whose maintainer scripts would start a system service (nginx, Prometheus):
# a temporary policy-rc.d answering 101 ("not allowed") keeps them stopped; the tests start
# their own instances in temp dirs. An existing policy-rc.d is left as it is.
apt_install_stopped() {
  can_apt || return 1
  local policy=/usr/sbin/policy-rc.d made="" status=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made=1
  fi
  apt_install "$@" || status=$?
  if [ -n "$made" ]; then rm -f "$policy"; fi
  return $status
}

# --- Debian's tools the tests run ------------------------------------------------------
# need_tool VAR NAME DEFAULT PACKAGE INSTALLER WHAT: VAR (if set), else NAME on PATH, else
# DEFAULT; installed with INSTALLER PACKAGE when missing, or stop naming it. Exports VAR.
need_tool() {
  local var="$1" name="$2" default="$3" package="$4" installer="$5" what="$6" path
  path="${!var:-$(command -v "$name" || echo "$default")}"
  if [ ! -x "$path" ]; then
    "$installer" "$package" || true
    [ -n "${!var:-}" ] || path="$(command -v "$name" || echo "$default")"
  fi
  [ -x "$path" ] || die "$name not found at $path and could not be installed: run 'apt-get install $package' as root (or set $var). $what"
  export "$var=$path"
}
# Chromium: Playwright cannot download browsers here.
need_tool CHROMIUM_PATH chromium /usr/bin/chromium chromium apt_install "The browser tests need it."
need_tool TURNSERVER_PATH turnserver /usr/bin/turnserver coturn apt_install "The relay-only WebRTC test needs it."
# nginx runs deploy/nginx/rtcsite.conf in the topology tests; Prometheus scrapes the site.
need_tool NGINX_PATH nginx /usr/sbin/nginx nginx apt_install_stopped "The topology tests need it."
need_tool PROMETHEUS_PATH prometheus /usr/bin/prometheus prometheus apt_install_stopped "The metrics test needs it."

# --- Redis -----------------------------------------------------------------------------
redis_ok() { .venv/bin/python -c 'import sys, redis; redis.Redis.from_url(sys.argv[1], socket_connect_timeout=1).ping()' "$1" 2>/dev/null; }
if [ -n "${TEST_REDIS_URL:-}" ] && redis_ok "$TEST_REDIS_URL"; then
  :
elif [ -n "${REDIS_URL:-}" ] && redis_ok "$REDIS_URL"; then
  TEST_REDIS_URL="$REDIS_URL"
elif redis_ok "redis://127.0.0.1:6379/0"; then
  TEST_REDIS_URL="redis://127.0.0.1:6379/0"
else
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server || true
  command -v redis-server >/dev/null 2>&1 || die "No Redis reachable and redis-server is not installed: run 'apt-get install redis-server' as root, or set TEST_REDIS_URL."
  REDIS_PORT="$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  REDIS_DIR="$(mktemp -d)"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --dir "$REDIS_DIR" \
    --logfile "$REDIS_DIR/redis.log" --daemonize no &
  REDIS_PID=$!
  trap 'kill "$REDIS_PID" 2>/dev/null; wait "$REDIS_PID" 2>/dev/null; rm -rf "$REDIS_DIR"' EXIT
  for _ in $(seq 50); do redis_ok "redis://127.0.0.1:$REDIS_PORT/0" && break; sleep 0.1; done
  redis_ok "redis://127.0.0.1:$REDIS_PORT/0" || die "Started redis-server on port $REDIS_PORT but it does not answer (log: $REDIS_DIR/redis.log)."
  TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
  say "started redis-server (pid $REDIS_PID) on port $REDIS_PORT for the tests"
fi
export TEST_REDIS_URL

# --- PostgreSQL (a few tests need it: it refuses what SQLite stores) ------------------------
pg_ok() { .venv/bin/python -c 'import sys, psycopg; psycopg.connect(sys.argv[1], connect_timeout=2).close()' "$1" 2>/dev/null; }
if [ -n "${TEST_POSTGRES_URL:-}" ] && pg_ok "$TEST_POSTGRES_URL"; then
  :
elif pg_ok "postgres://postgres@127.0.0.1:5432/postgres"; then
  TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:5432/postgres"
else
  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  [ -n "$PG_BIN" ] || { apt_install postgresql || true; PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"; }
  [ -n "$PG_BIN" ] || die "No PostgreSQL reachable and none installed: run 'apt-get install postgresql' as root, or set TEST_POSTGRES_URL to a role that may create databases."
  # A private cluster on a free port, trust auth, run as the 'postgres' user when we are root
  # (initdb refuses root), stopped and deleted on exit.
  PG_PORT="$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  PG_DIR="$(mktemp -d)"
  as_pg() { if [ "$(id -u)" = "0" ]; then chown -R postgres "$PG_DIR"; su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
  PG_USER="$([ "$(id -u)" = "0" ] && echo postgres || id -un)"
  as_pg "'$PG_BIN/initdb' -D '$PG_DIR/data' -U postgres -A trust >'$PG_DIR/initdb.log' 2>&1" ||
    die "initdb failed (log: $PG_DIR/initdb.log)."
  as_pg "'$PG_BIN/pg_ctl' -D '$PG_DIR/data' -l '$PG_DIR/pg.log' -w -o \"-p $PG_PORT -h 127.0.0.1 -k '$PG_DIR'\" start >/dev/null" ||
    die "PostgreSQL did not start (log: $PG_DIR/pg.log)."
  stop_pg() { as_pg "'$PG_BIN/pg_ctl' -D '$PG_DIR/data' -m fast stop >/dev/null 2>&1"; rm -rf "$PG_DIR"; }
  previous_trap="$(trap -p EXIT | sed -e "s/^trap -- '//" -e "s/' EXIT$//")"
  trap "stop_pg; ${previous_trap:-:}" EXIT
  TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
  pg_ok "$TEST_POSTGRES_URL" || die "Started PostgreSQL on port $PG_PORT but it does not answer (log: $PG_DIR/pg.log)."
  say "started PostgreSQL on port $PG_PORT for the tests ($PG_USER)"
fi
export TEST_POSTGRES_URL
