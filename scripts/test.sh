#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need, builds the example and test
# plugins, then runs lint and every test. Usage: ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> toolchain"
rustup component add rustfmt clippy

echo "==> plugins (Rust, Python and JavaScript components the tests load)"
bash scripts/build-plugins.sh

echo "==> format and lint"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

echo "==> plugin unit tests (python-greeter's plain-Python logic)"
python3 plugins/python-greeter/tests/test_greeter.py

echo "==> tests"
cargo test --locked --all-targets -- --test-threads 4
