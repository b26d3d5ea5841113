#!/usr/bin/env bash
# ./run_local.sh          set up .venv if needed, sanitize the bundled sample into ./out
# ./run_local.sh test     set up .venv if needed, run ruff, mypy and the whole test suite
# ./run_local.sh bench    set up .venv if needed, run the throughput benchmark
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.installed-$(cat setup.py | sha256sum | cut -c1-16)

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV with $($PY --version)" >&2
    "$PY" -m venv "$VENV"
  fi
  if [ ! -f "$STAMP" ]; then
    echo "installing the package and test tools into $VENV (first run only; log: $VENV/install.log)" >&2
    if ! { "$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade pip &&
           "$VENV/bin/python" -m pip install --disable-pip-version-check -e '.[test]'; } > "$VENV/install.log" 2>&1; then
      tail -n 30 "$VENV/install.log" >&2
      echo "installation failed; full log in $VENV/install.log" >&2
      exit 1
    fi
    rm -f "$VENV"/.installed-*
    touch "$STAMP"
  fi
}

setup
case "${1:-run}" in
  run)
    shift || true
    "$VENV/bin/python" -m pipeline \
      --input 'sample/*.ndjson' --input 'sample/*.ndjson.gz' \
      --output out \
      --pseudonym-key-file sample/dev-pseudonym.key \
      --as-of 2026-11-25T00:00:00Z "$@"
    ;;
  test)
    shift
    "$VENV/bin/ruff" check .
    "$VENV/bin/mypy"   # settings and files: [tool.mypy] in pyproject.toml
    "$VENV/bin/python" -m pytest -q "$@"
    ;;
  bench)
    shift
    "$VENV/bin/python" bench/run_bench.py "$@"
    ;;
  *)
    echo "usage: ./run_local.sh [run|test|bench] [extra args]" >&2
    exit 2
    ;;
esac
