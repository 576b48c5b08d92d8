#!/usr/bin/env bash
# Creates .venv (if missing) and installs vlm with its test, evaluation, benchmark, Hub, demo and shards extras. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# pip, not uv/poetry: pip finds the torch wheels already on this kind of machine's disk.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test,eval,bench,hub,demo,shards]'
# The caption toolkit's PTB tokenizer and METEOR run on Java: install it where this machine's package manager allows
# (root with apt); elsewhere their tests are skipped, and pytest -rs says so.
if ! command -v java >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq default-jre-headless >/dev/null) \
        || echo "setup: Java could not be installed; the METEOR and PTB tokenizer tests will be skipped" >&2
fi
