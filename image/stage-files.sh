#!/bin/bash
# Fill pi-gen-stage/files/ with what the stage installs: the newest synch wheel from dist/,
# the arm64 wheels of its dependencies for the image's python (so the stage installs offline,
# the same set every time), and a copy of appliance/: the stage directory is self-contained.
# Usage: image/stage-files.sh [DIST_DIR]   (PYTHON: a python with pip; TARGET_PYTHON: the
# image's python version, 3.13 on trixie)
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
"${PYTHON:-$top/.venv/bin/python}" -m pip download -q --disable-pip-version-check \
	-d "$files/wheels" --only-binary=:all: --implementation cp \
	--python-version "${TARGET_PYTHON:-3.13}" --platform manylinux_2_28_aarch64 \
	--platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 "$wheel" 2>&1 |
	{ grep -v "^WARNING: Location" || true; }
rm -f "$files/wheels/$(basename "$wheel")"
ls "$files"/wheels/gevent-*.whl >/dev/null  # the dependency download did happen
cp -r "$top/appliance" "$files/appliance"
find "$files/appliance" -name '__pycache__' -prune -exec rm -rf {} +
basename "$wheel" | sed -E 's/^synch-([^-]+)-.*/synch \1/' >"$files/VERSION"
echo "stage-files: $(basename "$wheel") and appliance/ in $files"
