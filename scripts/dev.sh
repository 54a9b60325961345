#!/usr/bin/env bash
# diffusion-explorer's two entry points; each sets everything up first (safe to re-run):
#   bash scripts/dev.sh app    install into .venv, then start the app on its defaults
#   bash scripts/dev.sh test   install with the test tools and headless Chromium, then run every test
# Extra arguments go to streamlit (app) or pytest (test).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv
PYTHON=${PYTHON:-python3}
K_DIFFUSION=k-diffusion==0.1.1.post1   # peer library for the agreement tests, installed without its deps

say() { printf '\033[1m[dev]\033[0m %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else echo "[dev] needs root for: $*" >&2; return 1
    fi
}

apt_install() {
    say "installing Debian packages: $*"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_python() {
    if ! command -v "$PYTHON" >/dev/null 2>&1; then apt_install python3 python3-venv; fi
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "[dev] Python >= 3.11 is needed; $PYTHON is $("$PYTHON" --version 2>&1)" >&2; exit 1
    fi
    # Debian splits venv/ensurepip into python3-venv.
    if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then apt_install python3-venv; fi
}

pip_install() {  # quiet, minus the notices some machines' pip configuration prints for every package
    "$VENV/bin/python" -m pip install -q "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

ensure_venv() {  # $@: requirement files
    ensure_python
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    local tag
    tag=$(basename "$1" .txt)
    local stamp="$VENV/.installed-$tag-$(cat requirements*.txt pyproject.toml scripts/dev.sh | sha256sum | cut -c1-16)"
    if [ ! -f "$stamp" ]; then
        say "installing Python packages from $* (torch is the pinned CPU build)"
        pip_install --upgrade pip
        local args=()
        for f in "$@"; do args+=(-r "$f"); done
        pip_install "${args[@]}"
        if [[ " $* " == *requirements-test.txt* ]]; then
            pip_install --no-deps "$K_DIFFUSION"
        fi
        say "installing explorer itself (editable: import explorer works from any directory)"
        pip_install --no-deps --no-build-isolation -e .
        rm -f "$VENV/.installed-$tag-"*
        touch "$stamp"
    fi
}

ensure_chromium() {
    if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
        apt_install chromium chromium-driver
    fi
}

cmd=${1:-}
shift || true
case "$cmd" in
    app)
        ensure_venv requirements.txt
        say "starting the app: open the URL printed below"
        exec "$VENV/bin/python" -m streamlit run app.py "$@"
        ;;
    test)
        ensure_venv requirements-test.txt
        ensure_chromium
        say "running the test suite"
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    *)
        echo "usage: bash scripts/dev.sh app|test [extra args]" >&2
        exit 2
        ;;
esac
