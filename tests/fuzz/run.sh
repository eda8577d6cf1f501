#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ one after the other, each for a given time, in one
# process (libFuzzer's default: one job, one worker), and prints one summary line per
# target.
#
#   tests/fuzz/run.sh [seconds-per-target] [target...]     # default: 600 s, every target
#
# The hand-written seeds in fuzz/seeds/<target>/ are read, never changed. The corpus lives
# in fuzz/corpus/<target>/: new inputs are added there, then the corpus is minimised
# (libFuzzer's set cover merge over covered edges, smaller than `cargo fuzz cmin`'s;
# FUZZ_CMIN=0 keeps it as it grew). Crashes are written to fuzz/artifacts/<target>/.
# Logs go to $DROGUE_CACHE_DIR/fuzz-logs/.
# Needs the nightly toolchain (`rustup toolchain install nightly --profile minimal`)
# and cargo-fuzz (`cargo install cargo-fuzz --locked`). Builds in its own target
# directory, so the workspace's (stable, unsanitised) builds stay as they are.
#
# Exit status: 0 when no target crashed, 1 otherwise.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${DROGUE_CACHE_DIR:-$HOME/.cache/drogue-serverless}"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$cache/fuzz-target}"
logs="$cache/fuzz-logs"
mkdir -p "$logs"

seconds="${1:-600}"
shift || true
cd "$root"
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

# One build, then the binaries run directly (as `cargo fuzz run` would), so that a change
# in the work tree during the runs does not rebuild. FUZZ_NO_BUILD=1 takes the last build.
if [ "${FUZZ_NO_BUILD:-0}" != 1 ]; then
    cargo +nightly fuzz build >"$logs/build.log" 2>&1 || {
        tail -n 40 "$logs/build.log" >&2
        echo "fuzz build failed (log: $logs/build.log)" >&2
        exit 2
    }
fi
bin="$CARGO_TARGET_DIR/$(rustc +nightly -vV | sed -n 's/^host: //p')/release"

# The value of libFuzzer's final `stat::<name>` line.
stat() { sed -n "s/^stat::$1: *//p" "$2" | tail -n 1; }

crashed=0
summary=()
for target in "${targets[@]}"; do
    corpus="fuzz/corpus/$target"
    artifacts="fuzz/artifacts/$target"
    mkdir -p "$corpus" "$artifacts"
    log="$logs/$target.log"
    started=$(date +%s)
    status=0
    seeds=()
    [ -d "fuzz/seeds/$target" ] && seeds=("fuzz/seeds/$target")
    "$bin/$target" "$corpus" "${seeds[@]}" -max_total_time="$seconds" -timeout=30 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" >"$log" 2>&1 || status=$?
    elapsed=$(($(date +%s) - started))
    runs=$(stat number_of_executed_units "$log")
    rate=$(stat average_exec_per_sec "$log")
    rss=$(stat peak_rss_mb "$log")
    cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1 || true)
    # libFuzzer also writes inputs that merely took long (`slow-unit-*`, reported, not
    # failures); crashes, leaks, timeouts and out-of-memory inputs are failures
    crashes=$(grep -cE '^==[0-9]+== ?ERROR|panicked at|deadly signal|Test unit written to .*/(crash|leak|timeout|oom)-' "$log" || true)
    slow=$(grep -cE 'Test unit written to .*/slow-unit-' "$log" || true)
    if [ "$status" -ne 0 ]; then
        crashed=1
        crashes="${crashes:-1} (exit $status; see $log and $artifacts/)"
    fi
    if [ "${FUZZ_CMIN:-1}" != 0 ] && [ "$status" -eq 0 ]; then
        before=$(find "$corpus" -type f | wc -l)
        # as `cargo fuzz cmin`, but a set cover of the covered edges (not of their hit
        # counts), about a third of its size: keep what it kept
        minimal=$(mktemp -d)
        if "$bin/$target" -set_cover_merge=1 -use_counters=0 -timeout=30 "$minimal" "$corpus" >"$logs/$target.cmin.log" 2>&1; then
            find "$corpus" -type f -delete
            cp "$minimal"/* "$corpus"/
        else
            echo "$target: minimising failed, corpus kept as it grew (log: $logs/$target.cmin.log)" >&2
        fi
        rm -rf "$minimal"
        minimised=" (minimised from $before)"
    else
        minimised=""
    fi
    files=$(find "$corpus" -type f | wc -l)
    bytes=$(du -sb "$corpus" | cut -f1)
    line="$target: ${elapsed} s, ${runs:-?} runs, ${rate:-?} exec/s, ${cov:-cov ?}, peak RSS ${rss:-?} MB, corpus $files files / $bytes bytes$minimised, crashes: ${crashes:-0}, slow inputs: ${slow:-0}"
    echo "$line"
    summary+=("$line")
done

echo
echo "summary (${seconds} s per target):"
printf '  %s\n' "${summary[@]}"
exit "$crashed"
