#!/usr/bin/env bash
# Set up everything the toolkit and its tests need, from nothing:
# Debian's data packages, a virtual environment in .venv, the CPU build of
# torch, and the project with its test, text and tracking extras.
# Safe to run again: each step is skipped or a no-op when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES="dataset-fashion-mnist wordnet-base chromium"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

missing=""
for package in $DEBIAN_PACKAGES; do
    dpkg -s "$package" >/dev/null 2>&1 || missing="$missing $package"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "bootstrap: installing Debian packages:$missing"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    else
        echo "bootstrap: missing Debian packages:$missing (run as root, or 'sudo apt-get install$missing');" \
             "the data loaders fall back where they can" >&2
    fi
fi

if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv with $PYTHON"
    "$PYTHON" -m venv .venv
fi
pip_install() {
    # pip's exit status is kept; only its warnings about absent local mirrors are dropped.
    .venv/bin/python -m pip install -q --disable-pip-version-check "$@" \
        2> >(grep -v "^WARNING: Location" >&2)
}
# torch first: on these machines pip takes the CPU build of this exact
# version from local disk, while any other request downloads a CUDA build.
pip_install "$TORCH_SPEC"
pip_install -e ".[test,text,tracking]"
.venv/bin/python -c "import torch, mitigate, losses; print('bootstrap: ready, torch', torch.__version__)"
