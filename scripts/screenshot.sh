#!/usr/bin/env bash
# Screenshot of the report made from the bundled fixture, for the README:
#   scripts/screenshot.sh [OUT.png] [WIDTH]   (default docs/report.png, 1200 px wide)
#   scripts/screenshot.sh docs/report.pdf      (a .pdf name prints the page as Chromium prints it)
# Needs Debian's chromium (apt-get install chromium). Runs headless with no network use.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/report.png}
width=${2:-1200}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cargo run --release --quiet -- report fixtures/container -o "$tmp/report" --quiet
if [ "${out##*.}" = pdf ]; then
  what=(--print-to-pdf="$(realpath -m "$out")" --no-pdf-header-footer)
else
  what=(--screenshot="$(realpath -m "$out")")
fi
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$tmp/profile" --hide-scrollbars --window-size="$width,2200" \
  "${what[@]}" \
  "file://$tmp/report/index.html" 2>/dev/null
echo "wrote $out"
