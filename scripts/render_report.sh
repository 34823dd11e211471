#!/usr/bin/env bash
# Render a report.html to a PNG with headless Chromium, to check it as a person would see it.
#
#   scripts/render_report.sh REPORT_HTML [OUT_PNG] [WIDTH] [HEIGHT]
#
# OUT_PNG defaults to REPORT_HTML with .png; the window is 1280 x 4000 by default.
# Needs Debian's `chromium` (apt-get install chromium) or `chromium-browser`/`google-chrome`
# on PATH, or CHROMIUM=/path/to/binary. Network features are disabled: the report must be
# self-contained, so a page that needs the network renders with holes.
set -euo pipefail

html=${1:?usage: render_report.sh REPORT_HTML [OUT_PNG] [WIDTH] [HEIGHT]}
out=${2:-${html%.html}.png}
width=${3:-1280}
height=${4:-4000}

browser=${CHROMIUM:-}
if [[ -z "$browser" ]]; then
  for name in chromium chromium-browser google-chrome; do
    if command -v "$name" >/dev/null 2>&1; then browser=$(command -v "$name"); break; fi
  done
fi
if [[ -z "$browser" ]]; then
  echo "render_report.sh: no chromium found (apt-get install chromium, or set CHROMIUM)" >&2
  exit 3
fi
[[ -f "$html" ]] || { echo "render_report.sh: $html: no such file" >&2; exit 2; }

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
abs_html=$(cd "$(dirname "$html")" && pwd)/$(basename "$html")
mkdir -p "$(dirname "$out")"
abs_out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")

"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --no-first-run --hide-scrollbars \
  --user-data-dir="$profile" --screenshot="$abs_out" --window-size="$width,$height" \
  "file://$abs_html" >/dev/null 2>&1
[[ -s "$abs_out" ]] || { echo "render_report.sh: chromium wrote no $abs_out" >&2; exit 1; }
echo "$abs_out"
