#!/bin/bash
# Run a pi-gen stage directory on a root filesystem the way pi-gen's build.sh does:
# prerun.sh, then each sub-stage NN-name/ in order, and in each, for i in 00..99:
# i-debconf, i-packages-nr, i-packages, i-run.sh (host side, ROOTFS_DIR, on_chroot),
# i-run-chroot.sh (fed to bash -e inside the root). SKIP files are honoured; patches are
# not supported (the synch stage has none) and stop the run rather than being ignored.
#
# Usage: image/run-stage.sh STAGE_DIR ROOTFS_DIR [--only GLOB | --skip GLOB]
#   only the sub-stages whose names match GLOB, or all but those (image/build.sh caches the
#   root filesystem after the sub-stages that do not install synch).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=image/lib.sh
source "$HERE/lib.sh"

STAGE_DIR="$(realpath "${1:?stage directory}")"
ROOTFS_DIR="$(realpath "${2:?root filesystem}")"
SELECT="${3:-}"
GLOB="${4:-*}"
case "$SELECT" in
"" | --only | --skip) ;;
*) die "unknown option $SELECT (--only GLOB or --skip GLOB)" ;;
esac
# What pi-gen exports to stage scripts (those the synch stage or its neighbours read).
export STAGE_DIR ROOTFS_DIR RELEASE
export STAGE="$(basename "$STAGE_DIR")"
export STAGE_WORK_DIR="$(dirname "$ROOTFS_DIR")"
export PREV_ROOTFS_DIR="$ROOTFS_DIR"
export TARGET_HOSTNAME="${TARGET_HOSTNAME:-raspberrypi}"
export FIRST_USER_NAME="${FIRST_USER_NAME:-pi}"
export ENABLE_SSH="${ENABLE_SSH:-1}"
export USE_QEMU="${USE_QEMU:-0}"
export IMG_NAME="${IMG_NAME:-synch}"
export -f on_chroot progress die

# pi-gen's copy_previous: here the base is already unpacked into ROOTFS_DIR.
copy_previous() {
	[ -d "$ROOTFS_DIR" ] || die "copy_previous: no root filesystem at $ROOTFS_DIR"
}
export -f copy_previous

packages() { # file -> package names without comments
	sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$1" | tr '\n' ' '
}

run_sub_stage() {
	local sub="$1" i pkgs
	pushd "$sub" >/dev/null
	for i in $(seq -w 0 99); do
		if [ -f "$i-debconf" ]; then
			progress "stage: $(basename "$sub")/$i-debconf"
			on_chroot <<-EOF
				debconf-set-selections <<'SELEOF'
				$(cat "$i-debconf")
				SELEOF
			EOF
		fi
		if [ -f "$i-packages-nr" ]; then
			pkgs="$(packages "$i-packages-nr")"
			progress "stage: $(basename "$sub")/$i-packages-nr: $pkgs"
			[ -z "$pkgs" ] || on_chroot <<<"apt-get -o Acquire::Retries=3 install --no-install-recommends -y -q $pkgs"
		fi
		if [ -f "$i-packages" ]; then
			pkgs="$(packages "$i-packages")"
			progress "stage: $(basename "$sub")/$i-packages: $pkgs"
			[ -z "$pkgs" ] || on_chroot <<<"apt-get -o Acquire::Retries=3 install -y -q $pkgs"
		fi
		[ ! -d "$i-patches" ] || die "$sub/$i-patches: quilt patches are not supported here"
		if [ -x "$i-run.sh" ]; then
			progress "stage: $(basename "$sub")/$i-run.sh"
			"./$i-run.sh"
		elif [ -f "$i-run.sh" ]; then
			progress "stage: skip $(basename "$sub")/$i-run.sh (not executable)"
		fi
		if [ -f "$i-run-chroot.sh" ]; then
			progress "stage: $(basename "$sub")/$i-run-chroot.sh"
			on_chroot <"$i-run-chroot.sh"
		fi
	done
	popd >/dev/null
}

ensure_binfmt
chroot_mount "$ROOTFS_DIR"
trap 'chroot_umount "$ROOTFS_DIR"' EXIT
cd "$STAGE_DIR"
[ ! -f SKIP ] || { progress "stage: $STAGE skipped (SKIP)"; exit 0; }
if [ -x prerun.sh ]; then
	./prerun.sh
fi
for sub in "$STAGE_DIR"/*/; do
	sub="${sub%/}"
	name="$(basename "$sub")"
	[ "$name" != files ] || continue
	# shellcheck disable=SC2053 # GLOB is a pattern
	case "$SELECT" in
	--only) [[ "$name" == $GLOB ]] || continue ;;
	--skip) [[ "$name" != $GLOB ]] || continue ;;
	esac
	[ ! -f "$sub/SKIP" ] || continue
	run_sub_stage "$sub"
done
