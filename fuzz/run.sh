#!/usr/bin/env bash
# Runs the cargo-fuzz targets for SECONDS each (default 600), one after the other.
#   fuzz/run.sh [SECONDS] [TARGET...]      targets: webhook_parse signature_verify (default: both)
# Needs only the stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its nightly-only flags.
# SANITIZER=none skips AddressSanitizer (faster, but libFuzzer's -malloc_limit_mb then has no effect).
# The committed seeds (fuzz/seeds/TARGET) are copied into a scratch corpus (fuzz/corpus/TARGET, gitignored);
# crashes land in fuzz/artifacts/TARGET. Builds and runs are nice'd.
set -euo pipefail

cd "$(dirname "$0")"
seconds="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(webhook_parse signature_verify)
sanitizer="${SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    for seed in "seeds/$target"/*; do
        [ -e "corpus/$target/${seed##*/}" ] || cp "$seed" "corpus/$target/"
    done
    dict=()
    [ -f "$target.dict" ] && dict=("-dict=$target.dict")
    echo "== $target: ${seconds}s, sanitizer=$sanitizer"
    # 1 MiB is the server's body limit; an input needing more than 512 MiB in one allocation or 2 GiB in
    # all is a finding.
    nice -n 19 cargo fuzz run -s "$sanitizer" "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len=1048576 \
        -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=30 \
        -print_final_stats=1 "${dict[@]}"
done
