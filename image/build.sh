#!/bin/bash
# Build the flashable arm64 synch image by running pi-gen-stage/ on a Debian trixie base:
#   1. base root filesystem (debootstrap + qemu-user-static), cached in $CACHE_DIR
#   2. the synch stage exactly as pi-gen runs it (image/run-stage.sh); the root filesystem
#      after its Asterisk sub-stages is cached in $CACHE_DIR too
#   3. raw disk image: FAT boot + ext4 root (image/assemble.sh)
#   4. xz for flashing
# Usage: image/build.sh [OUT_DIR]   (default image/out; needs `make stage-files` first)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOP="$(dirname "$HERE")"
# shellcheck source=image/lib.sh
source "$HERE/lib.sh"

OUT_DIR="$(mkdir -p "${1:-$HERE/out}" && cd "${1:-$HERE/out}" && pwd)"
STAGE="$TOP/pi-gen-stage"
XZ_LEVEL="${XZ_LEVEL:-3}"  # 0..9, or "none" for no .xz (a boot test needs only the .img)
[ "$(id -u)" = 0 ] || die "run as root (chroot, mounts of /proc and /dev for package scripts)"
for tool in debootstrap mkfs.ext4 mkfs.vfat mcopy sfdisk xz update-binfmts; do
	command -v "$tool" >/dev/null || die "$tool not found (apt-get install debootstrap \
qemu-user-static binfmt-support dosfstools mtools fdisk xz-utils e2fsprogs)"
done
ls "$STAGE"/files/synch_*.deb >/dev/null 2>&1 || die "no synch package in $STAGE/files: run 'make stage-files'"

timings="$OUT_DIR/timings.txt"
: >"$timings"
step() { # name start
	local s=$(($(date +%s) - $2))
	echo "$1 $s" >>"$timings"
	progress "$1: $s s"
}

t=$(date +%s)
base="$("$HERE/build-base.sh")"
step base "$t"

t=$(date +%s)
work="$CACHE_DIR/work"
ROOTFS_DIR="$work/rootfs"
export ROOTFS_DIR
chroot_umount "$ROOTFS_DIR" 2>/dev/null || true
rm -rf --one-file-system "$work"
mkdir -p "$ROOTFS_DIR"
# The sub-stages before 02-synch (Asterisk from sid: ~9.5 min under emulation) do not depend
# on synch: their result is cached as a layer over the base, keyed on the base and their files.
LAYER_SUBSTAGES='0[01]-*'
layer_key="$( { echo "$base"; cat "$HERE/run-stage.sh" "$HERE/lib.sh" "$STAGE/prerun.sh";
	# shellcheck disable=SC2086 # the glob is meant to expand
	cd "$STAGE" && find $LAYER_SUBSTAGES -type f -print0 | sort -z | xargs -0 sha256sum; } |
	sha256sum | cut -c1-12)"
layer="$CACHE_DIR/layer-asterisk-$layer_key.tar"
if [ -s "$layer" ]; then
	progress "unpack cached layer $layer"
	tar --numeric-owner --xattrs --acls -C "$ROOTFS_DIR" -xf "$layer"
else
	progress "unpack base"
	tar --numeric-owner --xattrs --acls -C "$ROOTFS_DIR" -xf "$base"
	progress "stage: $STAGE ($LAYER_SUBSTAGES: the Asterisk layer)"
	"$HERE/run-stage.sh" "$STAGE" "$ROOTFS_DIR" --only "$LAYER_SUBSTAGES"
	rm -f "$CACHE_DIR"/layer-asterisk-*.tar
	tar --numeric-owner --xattrs --acls -C "$ROOTFS_DIR" -cf "$layer.part" . && mv "$layer.part" "$layer"
	progress "cached the Asterisk layer: $layer"
fi
progress "stage: $STAGE (the rest)"
"$HERE/run-stage.sh" "$STAGE" "$ROOTFS_DIR" --skip "$LAYER_SUBSTAGES"
# The build host's resolver was copied in for the package downloads; the device gets its own
# from DHCP (as pi-gen's export-image resets it).
printf '# set from DHCP at boot\n' >"$ROOTFS_DIR/etc/resolv.conf"
step stage "$t"

t=$(date +%s)
version="$(sed -n 's/^synch //p' "$STAGE/files/VERSION" 2>/dev/null || echo dev)"
img="$OUT_DIR/synch-$version-arm64.img"
"$HERE/assemble.sh" "$ROOTFS_DIR" "$img"
ln -sfn "$(basename "$img")" "$OUT_DIR/synch-arm64.img"
step assemble "$t"

echo "image $(du -h --apparent-size "$img" | cut -f1) raw, $(du -h "$img" | cut -f1) allocated" >>"$timings"
if [ "$XZ_LEVEL" = none ]; then
	progress "done: $img (not compressed); timings in $timings"
	exit 0
fi
t=$(date +%s)
progress "compress: xz -$XZ_LEVEL"
rm -f "$img.xz"
nice -n 10 xz -T2 "-$XZ_LEVEL" -k -f "$img"
step compress "$t"
echo "xz $(du -h "$img.xz" | cut -f1)" >>"$timings"
progress "done: $img.xz ($(du -h "$img.xz" | cut -f1)); timings in $timings"
