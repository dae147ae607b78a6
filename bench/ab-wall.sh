#!/usr/bin/env bash
# Wall time of one `shrink run`, two binaries interleaved (A B A B ...), each
# run into a fresh output folder (no checkpoint is reused); prints every time
# and both medians, and checks that both runs' report figures agree (latency,
# time and hashes left out).
# usage: bench/ab-wall.sh A_SHRINK B_SHRINK PAIRS PIPELINE [--set KEY=VALUE ...]
set -euo pipefail
a=$1 b=$2 pairs=$3 pipeline=$4
shift 4
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for i in $(seq 1 "$pairs"); do
  for side in a b; do
    bin=$a; [ "$side" = b ] && bin=$b
    start=$(date +%s.%N)
    "$bin" run "$pipeline" "$@" --set "pipeline.output=\"$out/$side-$i\"" >/dev/null 2>&1
    end=$(date +%s.%N)
    t=$(echo "$end - $start" | bc)
    echo "$side $i $t" | tee -a "$out/times"
  done
done
median() { grep "^$1 " "$out/times" | awk '{print $3}' | sort -n | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
ma=$(median a); mb=$(median b)
echo "median A ${ma}s  B ${mb}s  B/A $(echo "scale=3; $mb / $ma" | bc)"
strip() { python3 -c '
import json, sys
def walk(x):
    if isinstance(x, dict):
        return {k: walk(v) for k, v in x.items() if not any(s in k for s in ("latency", "seconds", "hash", "git_rev", "time"))}
    if isinstance(x, list):
        return [walk(v) for v in x]
    return x
print(json.dumps(walk(json.load(open(sys.argv[1]))), sort_keys=True, indent=1))' "$1"; }
if diff <(strip "$out/a-1/report.json") <(strip "$out/b-1/report.json") >/dev/null; then
  echo "report figures: identical"
else
  echo "report figures: DIFFER"; diff <(strip "$out/a-1/report.json") <(strip "$out/b-1/report.json") | head -40
fi
