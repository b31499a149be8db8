#!/bin/sh
# Builds the plugins the transformer tests use into target/plugins/*.wasm:
#   target/plugins/test_guest.wasm    scriptable / hostile test plugin
#   target/plugins/evil_import.wasm   imports an interface the host does not offer
#   target/plugins/rust_privacy.wasm  the example plugin in plugins/rust-privacy
# Needs: rustup target add wasm32-wasip2
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/target/plugins"
build="$root/target/plugin-build"
mkdir -p "$out"

CARGO_TARGET_DIR="$build" cargo build --quiet --release --target wasm32-wasip2 \
    --manifest-path "$root/tests/plugins/Cargo.toml"
CARGO_TARGET_DIR="$build" cargo build --quiet --release --target wasm32-wasip2 \
    --manifest-path "$root/plugins/rust-privacy/Cargo.toml"

for name in test_guest evil_import rust_privacy; do
    cp "$build/wasm32-wasip2/release/$name.wasm" "$out/$name.wasm"
done
echo "plugins built into $out"
