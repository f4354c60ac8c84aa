# Sourced by scripts/run-tests: find or install Chromium, find or start a Redis server.
# Exports CHROMIUM_PATH and TEST_REDIS_URL; a Redis started here is stopped on exit (by PID).

say() { printf '\033[1m[test-env]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[test-env] %s\033[0m\n' "$*" >&2; exit 1; }
can_apt() { [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; }
apt_install() {
  can_apt || return 1
  say "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --- Chromium (Debian's; Playwright cannot download browsers here) ---------------------
CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM_PATH" ]; then
  apt_install chromium || true
fi
[ -x "$CHROMIUM_PATH" ] || die "Chromium not found at $CHROMIUM_PATH and could not be installed: run 'apt-get install chromium' as root (or set CHROMIUM_PATH). The browser tests need it."
export CHROMIUM_PATH

# --- coturn (TURN server for the relay-only WebRTC test) --------------------------------
TURNSERVER_PATH="${TURNSERVER_PATH:-$(command -v turnserver || echo /usr/bin/turnserver)}"
if [ ! -x "$TURNSERVER_PATH" ]; then
  apt_install coturn || true
  TURNSERVER_PATH="$(command -v turnserver || echo /usr/bin/turnserver)"
fi
[ -x "$TURNSERVER_PATH" ] || die "coturn's turnserver not found and could not be installed: run 'apt-get install coturn' as root (or set TURNSERVER_PATH). The TURN test needs it."
export TURNSERVER_PATH

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
