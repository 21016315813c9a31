#!/usr/bin/env bash
# Build the separate virtualenv in which wf-dagger 0.2.6 (Wayfair's Dagger, from PyPI) runs
# the pizza baseline (bench/wf_dagger/pizza_wf_dagger.py). Outside the repo, never the repo's
# .venv: wf-dagger's import package is called `dagger` and it needs undeclared dependencies.
#
#   bash bench/wf_dagger/setup.sh            # -> /tmp/wfd-venv (WFD_VENV to change)
#   WFD_PYTHON=python3.10 bash bench/wf_dagger/setup.sh
#
# Idempotent: an existing venv is reused and brought to the pinned set.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${WFD_VENV:-/tmp/wfd-venv}"
python="${WFD_PYTHON:-}"
if [[ -z "$python" ]]; then
    # wf-dagger's classifiers stop at 3.10, but 0.2.6 runs on 3.11 (checked); newer ones untested.
    for candidate in python3.11 /usr/bin/python3.11 python3.10 python3; do
        if command -v "$candidate" >/dev/null 2>&1; then python="$candidate"; break; fi
    done
fi
echo "[wf-dagger] python: $("$python" -c 'import sys; print(sys.executable, sys.version.split()[0])')"

if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
# Everything from PyPI, exact versions; wheels only (aerospike and rocksdict ship manylinux
# wheels, so nothing is compiled).
"$venv/bin/python" -m pip install -q --only-binary=:all: -r "$here/requirements.txt"

# The check that wf-dagger's own packaging never makes: import the engine and its stores.
"$venv/bin/python" - <<'PY'
import importlib.metadata as md
import dagger.service.services  # needs jsonpickle, schema_registry, aerospike (stores.py), aiohttp
import dagger.store.stores
import faust.stores.rocksdb as r
assert r.USE_ROCKSDICT, "faust's RocksDB store has no driver (rocksdict missing)"
print("[wf-dagger] ok:", ", ".join(f"{n} {md.version(n)}" for n in
      ("wf-dagger", "faust-streaming", "mode-streaming", "aiokafka", "rocksdict", "aerospike",
       "jsonpickle", "python-schema-registry-client")))
PY
echo "[wf-dagger] venv: $venv (run: $venv/bin/python $here/pizza_wf_dagger.py --help)"
