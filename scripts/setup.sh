#!/usr/bin/env bash
# Set up everything the site needs on a fresh Debian machine with Python 3.11:
# the .venv (uv, from the lock file), npm assets copied into static/vendor/, migrations.
# Idempotent and quick when nothing changed. Sourced or run by scripts/run-site and
# scripts/run-tests; stops with a message naming what is missing and how to get it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
UV_VERSION="0.13.9"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[setup] %s\033[0m\n' "$*" >&2; exit 1; }
can_apt() { [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; }
APT_UPDATED=0
apt_install() {
  can_apt || return 1
  if [ "$APT_UPDATED" = 0 ]; then
    say "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || return 1
    APT_UPDATED=1
  fi
  say "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --- Python 3.11 and the virtualenv ----------------------------------------------------
find_python() {
  for candidate in "${PYTHON:-}" python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  return 1
}

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
  PY="$(find_python)" || die "Python 3.11 not found. Install it (Debian: apt-get install python3.11 python3.11-venv) or set PYTHON=/path/to/python3.11."
  say "creating .venv with $PY"
  rm -rf .venv
  if ! "$PY" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    apt_install python3.11-venv || die "Cannot create a virtualenv: install the venv module (Debian: apt-get install python3.11-venv)."
    "$PY" -m venv .venv || die "Cannot create .venv with $PY."
  fi
fi

if ! .venv/bin/uv --version 2>/dev/null | grep -q "$UV_VERSION"; then
  say "installing uv $UV_VERSION into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check "uv==$UV_VERSION" ||
    die "Could not install uv from PyPI (pip install uv==$UV_VERSION). Is PyPI reachable?"
fi

say "syncing Python dependencies from uv.lock"
UV_PYTHON_DOWNLOADS=never VIRTUAL_ENV="$ROOT/.venv" .venv/bin/uv sync --frozen --quiet ||
  die "uv sync failed (see above). The lock file is uv.lock; PyPI must be reachable."

# --- npm assets ------------------------------------------------------------------------
if ! command -v npm >/dev/null 2>&1; then
  apt_install nodejs npm || die "npm not found: install Node.js and npm (Debian: apt-get install nodejs npm), then rerun."
fi
STAMP="node_modules/.rtcsite-lock-stamp"
if [ ! -f "$STAMP" ] || ! cmp -s package-lock.json "$STAMP"; then
  say "npm ci (hls.js, dashjs, face-api)"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null || die "npm ci failed (see above). The npm registry must be reachable."
  cp package-lock.json "$STAMP"
fi
.venv/bin/python manage.py vendor_assets --skip-checks -v0 >/dev/null || die "manage.py vendor_assets failed."

# --- database --------------------------------------------------------------------------
.venv/bin/python manage.py migrate --noinput -v0 || die "manage.py migrate failed (DATABASE_URL=${DATABASE_URL:-<sqlite>})."
say "ready"
