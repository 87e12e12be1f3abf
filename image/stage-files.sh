#!/bin/bash
# Fill pi-gen-stage/files/ with what the stage installs: the newest synch wheel from dist/
# and a copy of appliance/, so the stage directory is self-contained for pi-gen.
# Usage: image/stage-files.sh [DIST_DIR]
set -euo pipefail
top="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dist="${1:-$top/dist}"
files="$top/pi-gen-stage/files"
wheel="$(ls "$dist"/synch-*.whl 2>/dev/null | sort -V | tail -n 1)" || true
[ -n "$wheel" ] || { echo "stage-files: no synch wheel in $dist" >&2; exit 1; }
[ -f "$top/appliance/appsettings.json" ] ||
	{ echo "stage-files: appliance/appsettings.json is missing" >&2; exit 1; }
rm -rf "$files"
mkdir -p "$files"
cp "$wheel" "$files/"
cp -r "$top/appliance" "$files/appliance"
find "$files/appliance" -name '__pycache__' -prune -exec rm -rf {} +
basename "$wheel" | sed -E 's/^synch-([^-]+)-.*/synch \1/' >"$files/VERSION"
echo "stage-files: $(basename "$wheel") and appliance/ in $files"
