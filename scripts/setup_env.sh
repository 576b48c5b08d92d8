#!/usr/bin/env bash
# Creates .venv (if missing) and installs vlm with its test, evaluation and benchmark extras. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# pip, not uv/poetry: pip finds the torch wheels already on this kind of machine's disk.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test,eval,bench]'
