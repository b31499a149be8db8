#!/usr/bin/env bash
# Builds every WebAssembly plugin the tests use into target/plugins/:
#   test_guest.wasm, evil_import.wasm, rust_privacy.wasm   (Rust; tests/plugins/build.sh)
#   python_greeter.wasm                                    (plugins/python-greeter, componentize-py)
#   js_transcript.wasm                                     (plugins/js-transcript, componentize-js)
# Installs what it needs itself (the wasm32-wasip2 Rust target, a Python venv, node_modules), so it runs on
# a fresh clone. A Python or JS plugin is rebuilt only when one of its inputs (sources, WIT, pinned tool
# versions, this script) is newer than its .wasm; cargo decides for the Rust ones.
# Usage (from anywhere): scripts/build-plugins.sh          FORCE=1 scripts/build-plugins.sh rebuilds all.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/target/plugins"
wit="$root/wit"
self="$root/scripts/build-plugins.sh"
force=${FORCE:-0}
mkdir -p "$out"

# One build at a time (two test runs at once would fight over the venv and node_modules).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$out/.build.lock"
    flock 9
fi

step() { echo "==> plugins: $*"; }
fail() { echo "build-plugins: $*" >&2; exit 1; }

# needs_build OUTPUT INPUT...: true when OUTPUT is missing or any INPUT (file or folder, searched
# recursively, __pycache__ ignored) is newer than it.
needs_build() {
    local output=$1
    shift
    [ "$force" = 1 ] && return 0
    [ -f "$output" ] || return 0
    [ -n "$(find "$@" -name __pycache__ -prune -o -newer "$output" -print -quit)" ]
}

# --- Rust: test plugins and the rust-privacy example -----------------------------------------------------
step "rust target wasm32-wasip2"
rustup target add wasm32-wasip2

step "rust plugins (tests/plugins/build.sh: test_guest, evil_import, rust_privacy)"
start=$SECONDS
sh "$root/tests/plugins/build.sh"
echo "    rust plugins done in $((SECONDS - start)) s"

# --- Python: plugins/python-greeter ------------------------------------------------------------------------
py_dir="$root/plugins/python-greeter"
venv="$py_dir/.venv"
py_stamp="$venv/.ferry-requirements.txt"   # a copy of the requirements the venv was last installed from

step "python-greeter toolchain (venv $venv)"
command -v python3 >/dev/null 2>&1 || fail "python3 is needed for plugins/python-greeter"
if [ -d "$venv" ] && ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    echo "    the venv is broken (moved, or its Python is gone): recreating it"
    rm -rf "$venv"
fi
if [ ! -d "$venv" ]; then
    python3 -m venv "$venv"
fi
if ! cmp -s "$py_dir/requirements.txt" "$py_stamp" || ! "$venv/bin/componentize-py" --version >/dev/null 2>&1; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$py_dir/requirements.txt"
    cp "$py_dir/requirements.txt" "$py_stamp"
else
    echo "    up to date ($("$venv/bin/componentize-py" --version))"
fi

py_wasm="$out/python_greeter.wasm"
if needs_build "$py_wasm" "$py_dir/src" "$py_dir/requirements.txt" "$py_stamp" "$wit" "$self"; then
    step "python_greeter.wasm (componentize-py, world output-transformer)"
    start=$SECONDS
    rm -f "$py_wasm"
    (cd "$py_dir" && "$venv/bin/componentize-py" -d "$wit" -w output-transformer \
        componentize -p src app -o "$py_wasm.tmp")
    mv "$py_wasm.tmp" "$py_wasm"
    echo "    built in $((SECONDS - start)) s"
else
    step "python_greeter.wasm is up to date"
fi

# --- JavaScript: plugins/js-transcript ---------------------------------------------------------------------
js_dir="$root/plugins/js-transcript"
js_stamp="$js_dir/node_modules/.ferry-package-lock.json"   # the lock file node_modules was installed from

step "js-transcript toolchain (npm ci)"
command -v npm >/dev/null 2>&1 || fail "node and npm are needed for plugins/js-transcript"
if ! cmp -s "$js_dir/package-lock.json" "$js_stamp" \
    || [ ! -x "$js_dir/node_modules/.bin/componentize-js" ]; then
    (cd "$js_dir" && npm ci --no-audit --no-fund)
    cp "$js_dir/package-lock.json" "$js_stamp"
else
    echo "    up to date (node_modules matches package-lock.json)"
fi

js_wasm="$out/js_transcript.wasm"
if needs_build "$js_wasm" "$js_dir/src" "$js_dir/package.json" "$js_dir/package-lock.json" "$js_stamp" \
    "$wit" "$self"; then
    step "js_transcript.wasm (componentize-js, world finished-transformer)"
    start=$SECONDS
    rm -f "$js_wasm"
    # -d fetch-event: the plugin exports no wasi:http incoming handler. Keep `http` enabled: it uses fetch().
    (cd "$js_dir" && ./node_modules/.bin/componentize-js --wit "$wit" -n finished-transformer \
        -d fetch-event -o "$js_wasm.tmp" src/app.js)
    [ -s "$js_wasm.tmp" ] || fail "componentize-js wrote no component"
    mv "$js_wasm.tmp" "$js_wasm"
    echo "    built in $((SECONDS - start)) s"
else
    step "js_transcript.wasm is up to date"
fi

step "done:"
ls -l "$out"/*.wasm
