#!/bin/sh
# azd post-provision hook (macOS, Linux): runs postprovision.py with the project's Python.
set -eu
cd "$(dirname "$0")/../.."
if [ -x .venv/bin/python ]; then
  PYTHON=.venv/bin/python
elif command -v python3 >/dev/null 2>&1; then
  PYTHON=python3
else
  PYTHON=python
fi
exec "$PYTHON" infra/scripts/postprovision.py
