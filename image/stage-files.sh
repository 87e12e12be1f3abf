#!/bin/bash
# Fill pi-gen-stage/files/ with what the stage installs: the newest synch package for the
# image's architecture and the synch-appliance package of the same version, from dist/
# (`make deb DEB_ARCH=arm64` builds them), and appliance/asterisk (the branch Asterisk base
# configuration): the stage directory is self-contained.
# Usage: image/stage-files.sh [DIST_DIR]   (DEB_ARCH: the image's architecture, arm64)
set -euo pipefail
top="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dist="${1:-$top/dist}"
arch="${DEB_ARCH:-arm64}"
files="$top/pi-gen-stage/files"
die() { echo "stage-files: $*" >&2; exit 1; }

deb="" version=""
for candidate in "$dist"/synch_*_"$arch".deb; do
	[ -f "$candidate" ] || continue
	v="$(dpkg-deb -f "$candidate" Version)"
	if [ -z "$version" ] || dpkg --compare-versions "$v" gt "$version"; then
		deb="$candidate" version="$v"
	fi
done
[ -n "$deb" ] || die "no synch_*_$arch.deb in $dist (make deb DEB_ARCH=$arch)"
appliance="$dist/synch-appliance_${version}_all.deb"
[ -f "$appliance" ] || die "no $(basename "$appliance") beside $(basename "$deb")"
[ -d "$top/appliance/asterisk" ] || die "appliance/asterisk is missing"

rm -rf "$files"
mkdir -p "$files/appliance"
cp "$deb" "$appliance" "$files/"
cp -r "$top/appliance/asterisk" "$files/appliance/asterisk"
# synch's own version (the Debian revision dropped): names the image.
echo "synch ${version%-*}" >"$files/VERSION"
echo "stage-files: $(basename "$deb"), $(basename "$appliance") and appliance/asterisk in $files"
