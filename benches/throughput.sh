#!/usr/bin/env bash
# Throughput and peak memory of `nsgflow summary` on a generated ~1 GB container, against
# the reference probe (../shared/probe) when present. Interleaved runs, warm page cache.
#
#   benches/throughput.sh [SIZE] [FAMILY] [RUNS] [report]   e.g. benches/throughput.sh 1G nsg 3
#
# With a fourth argument `report`, each round also runs `nsgflow report` (the main job: one
# pass with connection stitching and the detectors, then every output written), `report
# --no-findings` and `nsgflow anomalies`, and the medians end with each one's time ratio to
# `summary`.
#
# Prints one line per run (seconds, CPU seconds, seconds stolen by the hypervisor, peak RSS)
# and the medians; each ratio to `summary` is given by wall time (the figure issue #11 sets
# targets on) and by CPU time (which stolen time does not reach), then the detectors' own
# share (`report` less `report --no-findings`, per round, over `summary`). Data goes to a
# temp dir that is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-1G}
family=${2:-nsg}
runs=${3:-3}
with_report=${4:-}
tmp=$(mktemp -d /tmp/nsgflow-bench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

cargo build --release --locked --quiet
bin=target/release/nsgflow
probe=""
if [ -f ../shared/probe/Cargo.toml ]; then
  cargo build --release --quiet --manifest-path ../shared/probe/Cargo.toml --target-dir "$tmp/probe-target"
  probe="$tmp/probe-target/release/nsgprobe"
fi

$bin gen --out "$tmp/c" --size "$size" --family "$family" --nsgs 4 --nics-per-nsg 4 --hours 6 --seed 7
bytes=$(du -sb "$tmp/c" | cut -f1)
echo "container: $bytes bytes ($family)"
find "$tmp/c" -type f -exec cat {} + > /dev/null   # warm the page cache

# The machine's stolen time in clock ticks (the 8th number of /proc/stat's cpu line): what the
# hypervisor gave other guests while this one wanted to run. A round with much of it is slow
# for reasons outside the program.
steal() { awk '/^cpu /{print $9}' /proc/stat; }

measure() { # label, command...
  local label=$1; shift
  local s0; s0=$(steal)
  /usr/bin/time -f "%e %M %U %S" -o "$tmp/t" "$@" > /dev/null 2>"$tmp/err" || true
  local st=$(( $(steal) - s0 ))
  read -r secs kb user sys < "$tmp/t"
  local cpu; cpu=$(python3 -c "print(f'{$user+$sys:.2f}')")
  echo "$label $secs s, cpu $cpu s, stolen $(python3 -c "print(f'{$st/$hz:.2f}')") s, peak RSS $((kb / 1024)) MiB, $(python3 -c "print(f'{$bytes/$secs/1e9:.2f}')") GB/s"
  echo "$label $secs $kb $cpu $st" >> "$tmp/all"
}
hz=$(getconf CLK_TCK)

for i in $(seq "$runs"); do
  measure "summary-2t" $bin summary "$tmp/c" --format json
  measure "summary-1t" $bin summary "$tmp/c" --format json -j 1
  if [ -n "$probe" ] && [ "$family" = nsg ]; then
    measure "probe-2t  " "$probe" "$tmp/c"
  fi
  if [ "$with_report" = report ]; then
    measure "report-2t " $bin report "$tmp/c" -o "$tmp/report" --quiet
    measure "report-nofind-2t" $bin report "$tmp/c" -o "$tmp/report" --quiet --no-findings
    measure "anomalies-2t" $bin anomalies "$tmp/c" --format json
  fi
done
echo "medians:"
python3 - "$tmp/all" "$bytes" "$hz" <<'PY'
import sys, statistics, collections
runs = collections.defaultdict(list)
cpus = collections.defaultdict(list)
stolen = 0
for line in open(sys.argv[1]):
    label, secs, kb, cpu, st = line.split()
    runs[label].append((float(secs), int(kb)))
    cpus[label].append(float(cpu))
    stolen += int(st)
size = int(sys.argv[2])
for label, v in runs.items():
    s = statistics.median(x[0] for x in v)
    m = max(x[1] for x in v) / 1024
    c = statistics.median(cpus[label])
    print(f"  {label}: {s:.2f} s, {size/s/1e9:.2f} GB/s, cpu {c:.2f} s, peak RSS max {m:.0f} MiB ({len(v)} runs)")
print(f"  stolen by the hypervisor during the runs: {stolen / int(sys.argv[3]):.1f} s in all")
med = {k: statistics.median(x[0] for x in v) for k, v in runs.items()}
peak = {k: max(x[1] for x in v) / 1024 for k, v in runs.items()}
for label in ["report-2t", "report-nofind-2t", "anomalies-2t"]:
    if label not in runs:
        continue
    # Also per round (the runs of a round are seconds apart, so a VM's drifting speed
    # cancels out): the median of those ratios.
    per_round = [r[0] / s[0] for r, s in zip(runs[label], runs["summary-2t"])]
    print(f"  {label.removesuffix('-2t')}/summary time: {med[label]/med['summary-2t']:.2f}x of medians, "
          f"{statistics.median(per_round):.2f}x median per round "
          f"({min(per_round):.2f}-{max(per_round):.2f}), "
          f"peak RSS +{peak[label]-peak['summary-2t']:.0f} MiB")
    # CPU time (user + system) leaves out what the hypervisor stole, which wall time on a
    # shared machine does not: a steadier figure of the work done, beside the wall ratio.
    cpu_round = [r / s for r, s in zip(cpus[label], cpus["summary-2t"])]
    print(f"    cpu time per round: {statistics.median(cpu_round):.2f}x "
          f"({min(cpu_round):.2f}-{max(cpu_round):.2f})")
if "report-2t" in runs and "report-nofind-2t" in runs:
    # The detectors' own cost: what `report` takes beyond `report --no-findings` in the
    # same round (the parse and the stitcher are in both, so the difference does not move
    # with them), as a share of that round's `summary`.
    share = [(r[0] - n[0]) / s[0] for r, n, s in
             zip(runs["report-2t"], runs["report-nofind-2t"], runs["summary-2t"])]
    cpu_share = [(r - n) / s for r, n, s in
                 zip(cpus["report-2t"], cpus["report-nofind-2t"], cpus["summary-2t"])]
    print(f"  detectors (report less report --no-findings)/summary time: "
          f"{statistics.median(share):.2f}x median per round "
          f"({min(share):.2f}-{max(share):.2f}); cpu {statistics.median(cpu_share):.2f}x "
          f"({min(cpu_share):.2f}-{max(cpu_share):.2f})")
PY
