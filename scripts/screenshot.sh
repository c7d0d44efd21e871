#!/usr/bin/env bash
# Screenshot of the report made from the bundled fixture, for the README:
#   scripts/screenshot.sh [OUT.png]     (default docs/report.png)
# Needs Debian's chromium (apt-get install chromium). Runs headless with no network use.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/report.png}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cargo run --release --quiet -- report fixtures/container -o "$tmp/report" --quiet
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$tmp/profile" --hide-scrollbars --window-size=1200,2200 \
  --screenshot="$out" "file://$tmp/report/index.html" 2>/dev/null
echo "wrote $out"
