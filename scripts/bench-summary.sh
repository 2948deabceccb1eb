#!/usr/bin/env bash
# Summarises the logs `make bench` writes to DIR (default build/bench): the median
# ("time:" middle estimate) of every criterion benchmark, the on/off ratios of the
# mmu-server's CR0.WP toggle measured in the same run, and the seeds harness's table.
set -euo pipefail
dir=${1:-build/bench}

# Criterion prints "name  time: [low mid high]" (a long name on a line of its own).
medians() {
    awk '
        # A "change:" block (the difference from the previous run) repeats "time:".
        /time:/ && prev == "change:" { next }
        /time:/ {
            line = $0
            name = line; sub(/[ \t]*time:.*/, "", name); gsub(/^[ \t]+/, "", name)
            if (name == "") name = prev
            sub(/.*time:[ \t]*\[/, "", line)
            split(line, f, /[ \t]+/)
            mid = f[3]; unit = f[4]
            ns = mid
            if (unit == "ps") ns = mid / 1000
            else if (unit ~ /^(µs|us)$/) ns = mid * 1000
            else if (unit == "ms") ns = mid * 1e6
            else if (unit == "s") ns = mid * 1e9
            printf "%s %.3f\n", name, ns
        }
        NF > 0 && !/time:/ { prev = $1 }
    ' "$@"
}

criterion_logs=()
for f in "$dir"/mmu.txt "$dir"/translate.txt "$dir"/mips.txt; do
    [ -f "$f" ] && criterion_logs+=("$f")
done

echo "== make bench summary ($(date -u '+%Y-%m-%d %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)) =="
if [ ${#criterion_logs[@]} -gt 0 ]; then
    table=$(medians "${criterion_logs[@]}")
    echo "criterion medians:"
    echo "$table" | awk '{
        v = $2
        if (v >= 1e6) printf "  %-48s %10.3f ms\n", $1, v / 1e6
        else if (v >= 1e3) printf "  %-48s %10.3f us\n", $1, v / 1e3
        else printf "  %-48s %10.1f ns\n", $1, v
    }'
    echo "CR0.WP toggle pair, RootReuse off / on (same run):"
    for mode in tdp shadow; do
        echo "$table" | awk -v m="$mode" '
            $1 == "wp_toggle_pair/" m "/reuse_on" { on = $2 }
            $1 == "wp_toggle_pair/" m "/reuse_off" { off = $2 }
            END { if (on > 0 && off > 0) printf "  %-8s %.1fx\n", m, off / on }'
    done
fi
if [ -f "$dir/mips.txt" ]; then
    echo "guest MIPS (wall-clock and per CPU-second of the vCPU thread):"
    grep -m2 'MIPS' "$dir/mips.txt" | sed 's/^/  /'
fi
if [ -f "$dir/seeds.txt" ]; then
    echo "seeds, end to end (kernexec):"
    sed -n '/^variant/,$p' "$dir/seeds.txt" | sed 's/^/  /'
fi
