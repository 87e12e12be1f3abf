# shellcheck shell=bash
# Helpers shared by the image build scripts (sourced, not run).
#
# The build runs arm64 code through qemu-user-static (binfmt_misc) and never uses loop
# devices: the only mounts are the pseudo filesystems a chroot needs while packages install.

set -euo pipefail

CACHE_DIR="${CACHE_DIR:-/var/cache/synch-image}"
RELEASE="${RELEASE:-trixie}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
_T0="${_T0:-$(date +%s)}"
export CACHE_DIR RELEASE DEBIAN_MIRROR _T0

# One progress line per step, with the seconds since the build started.
progress() {
	printf '[image +%4ds] %s\n' "$(($(date +%s) - _T0))" "$*" >&2
}

die() {
	printf 'image: error: %s\n' "$*" >&2
	exit 1
}

# qemu-user-static registered with the F flag runs arm64 binaries inside any chroot.
ensure_binfmt() {
	if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
		mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
	fi
	if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
		update-binfmts --enable qemu-aarch64
	fi
	grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 ||
		die "qemu-aarch64 binfmt is not enabled (install qemu-user-static binfmt-support)"
}

# Mount what package scripts expect inside ROOTFS_DIR; undone by chroot_umount.
chroot_mount() {
	local root="$1"
	mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
	mountpoint -q "$root/sys" || mount -t sysfs sysfs "$root/sys"
	mountpoint -q "$root/dev" || mount --bind /dev "$root/dev"
	mountpoint -q "$root/dev/pts" || mount -t devpts devpts "$root/dev/pts" -o newinstance,ptmxmode=0666
	mountpoint -q "$root/run" || mount -t tmpfs tmpfs "$root/run"
	mountpoint -q "$root/tmp" || mount -t tmpfs tmpfs "$root/tmp"
	# Package downloads are kept between builds.
	mkdir -p "$CACHE_DIR/apt-archives/partial" "$root/var/cache/apt/archives"
	mountpoint -q "$root/var/cache/apt/archives" ||
		mount --bind "$CACHE_DIR/apt-archives" "$root/var/cache/apt/archives"
	mkdir -p "$CACHE_DIR/pip" "$root/root/.cache/pip"
	mountpoint -q "$root/root/.cache/pip" || mount --bind "$CACHE_DIR/pip" "$root/root/.cache/pip"
	build_apt_conf "$root"
}

# The archive reached from the build machine may be a frozen snapshot whose sid Release file
# is past its Valid-Until by the machine's clock; for the build only (never in the image),
# apt may accept it. APT_CHECK_VALID_UNTIL=1 keeps apt's check.
APT_BUILD_CONF=etc/apt/apt.conf.d/00synch-build-only
build_apt_conf() {
	local root="$1"
	if [ "${APT_CHECK_VALID_UNTIL:-0}" != 1 ]; then
		echo 'Acquire::Check-Valid-Until "false";' >"$root/$APT_BUILD_CONF"
	fi
}

chroot_umount() {
	local root="$1" m
	rm -f "$root/$APT_BUILD_CONF"
	# Deepest first; tolerate mounts that are already gone.
	for m in root/.cache/pip var/cache/apt/archives tmp run dev/pts dev sys proc; do
		if mountpoint -q "$root/$m"; then
			umount "$root/$m" || umount -l "$root/$m"
		fi
	done
}

# pi-gen's on_chroot: run stdin (or the arguments) with bash -e inside ROOTFS_DIR.
on_chroot() {
	chroot "${ROOTFS_DIR:?}" /usr/bin/env -i \
		HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
		/bin/bash -e "$@"
}
