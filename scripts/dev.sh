#!/usr/bin/env bash
# diffusion-explorer's entry points (the README's two commands, and the notebooks); each sets everything
# up first (safe to re-run):
#   bash scripts/dev.sh app    install into .venv, then start the app on its defaults
#   bash scripts/dev.sh test   install with the test tools and headless Chromium, then run every test
#   bash scripts/dev.sh notebooks   install into .venv, then open notebooks/ in JupyterLab
# Extra arguments go to streamlit (app), pytest (test) or jupyter lab (notebooks).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv
PYTHON=${PYTHON:-python3}
K_DIFFUSION=k-diffusion==0.1.1.post1   # peer library for the agreement tests, installed without its deps
PIP=pip==26.3

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

ensure_venv() {  # $1: the lock to install, requirements.txt or requirements-test.txt (which includes it)
    ensure_python
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    local hash tag
    hash=$(cat requirements*.txt pyproject.toml scripts/dev.sh | sha256sum | cut -c1-16)
    tag=$(basename "$1" .txt)
    # A venv set up for the tests has the runtime lock too.
    if [ -f "$VENV/.installed-$tag-$hash" ] || [ -f "$VENV/.installed-requirements-test-$hash" ]; then
        return
    fi
    say "installing Python packages from $1 (torch is the pinned CPU build)"
    pip_install "$PIP"
    pip_install -r "$1"
    if [ "$tag" = requirements-test ]; then
        pip_install --no-deps "$K_DIFFUSION"
    fi
    say "installing explorer itself into $VENV (editable: import explorer works from any directory)"
    pip_install --no-deps --no-build-isolation -e .
    rm -f "$VENV"/.installed-*
    touch "$VENV/.installed-$tag-$hash"
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
        exec "$VENV/bin/python" app_pages/serve.py "$@"  # streamlit run app.py, its heavy imports done first
        ;;
    notebooks)
        ensure_venv requirements.txt
        say "starting JupyterLab on notebooks/: open the URL printed below"
        root_flag=()
        if [ "$(id -u)" = 0 ]; then root_flag=(--allow-root); fi  # Jupyter refuses root without it
        exec "$VENV/bin/jupyter" lab notebooks/ "${root_flag[@]}" "$@"
        ;;
    test)
        ensure_venv requirements-test.txt
        ensure_chromium
        say "running the test suite"
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    *)
        echo "usage: bash scripts/dev.sh app|test|notebooks [extra args]" >&2
        exit 2
        ;;
esac
