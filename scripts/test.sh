#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need, builds the example and test
# plugins, then runs lint and every test. Usage: ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> toolchain"
rustup component add rustfmt clippy >/dev/null 2>&1 || true

if [ -x scripts/build-plugins.sh ]; then
  echo "==> plugins"
  scripts/build-plugins.sh
fi

echo "==> format and lint"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

echo "==> tests"
cargo test --locked --all-targets -- --test-threads 4
