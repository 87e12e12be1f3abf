#!/bin/bash
# Debian arm64 base root filesystem: the stand-in for pi-gen's stage0..stage2 when the
# Raspberry Pi archive is out of reach. It differs from Raspberry Pi OS only where booting
# under `qemu-system-aarch64 -M virt` needs it: Debian's generic arm64 kernel and initrd
# instead of the Raspberry Pi kernel, systemd-networkd instead of NetworkManager.
#
# Usage: image/build-base.sh   -> prints the path of the cached base tarball
# The tarball is cached in $CACHE_DIR and rebuilt only when this script changes.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=image/lib.sh
source "$HERE/lib.sh"

BASE_PACKAGES="systemd-sysv,udev,dbus,kmod,iproute2,netbase,ca-certificates,openssh-server,\
sudo,less,zstd,initramfs-tools,linux-image-arm64,apt-utils,procps"

key="$(cat "$HERE/build-base.sh" | sha256sum | cut -c1-12)"
tarball="$CACHE_DIR/base-$RELEASE-arm64-$key.tar"
if [ -s "$tarball" ]; then
	progress "base: cached $tarball"
	echo "$tarball"
	exit 0
fi

ensure_binfmt
mkdir -p "$CACHE_DIR/debs"
work="$(mktemp -d "$CACHE_DIR/base-work.XXXXXX")"
ROOTFS_DIR="$work/rootfs"
export ROOTFS_DIR
cleanup() {
	chroot_umount "$ROOTFS_DIR" 2>/dev/null || true
	rm -rf --one-file-system "$work"
}
trap cleanup EXIT

progress "base: debootstrap $RELEASE arm64 (minbase + kernel)"
t=$(date +%s)
nice -n 10 debootstrap --arch=arm64 --variant=minbase --cache-dir="$CACHE_DIR/debs" \
	--include="$BASE_PACKAGES" "$RELEASE" "$ROOTFS_DIR" "$DEBIAN_MIRROR" \
	>"$work/debootstrap.log" 2>&1 || {
	tail -n 30 "$work/debootstrap.log" >&2
	die "debootstrap failed (log above)"
}
progress "base: debootstrap done in $(($(date +%s) - t)) s"

cat >"$ROOTFS_DIR/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $DEBIAN_MIRROR
Suites: $RELEASE $RELEASE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
rm -f "$ROOTFS_DIR/etc/apt/sources.list"

# Labels instead of pi-gen's PARTUUIDs: the qemu disk and a flashed card both carry them.
cat >"$ROOTFS_DIR/etc/fstab" <<'EOF'
proc            /proc           proc    defaults          0       0
LABEL=bootfs    /boot/firmware  vfat    defaults          0       2
LABEL=rootfs    /               ext4    defaults,noatime  0       1
EOF
mkdir -p "$ROOTFS_DIR/boot/firmware"
echo raspberrypi >"$ROOTFS_DIR/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\traspberrypi\n' >"$ROOTFS_DIR/etc/hosts"

cat >"$ROOTFS_DIR/etc/systemd/network/20-wired.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=yes
EOF

chroot_mount "$ROOTFS_DIR"
progress "base: configure (networkd, apt update)"
on_chroot <<'EOF'
apt-get update -qq
# networkd has its own package on newer Debian; inside systemd otherwise.
if apt-cache show systemd-networkd >/dev/null 2>&1; then
	apt-get install -y -qq --no-install-recommends systemd-networkd >/dev/null
fi
systemctl enable systemd-networkd.service
# First boot makes a fresh machine id.
: >/etc/machine-id
rm -f /var/lib/dbus/machine-id
# Host keys are made per device at first boot (as pi-gen's export does).
rm -f /etc/ssh/ssh_host_*
passwd -l root >/dev/null
apt-get clean
EOF
chroot_umount "$ROOTFS_DIR"

progress "base: pack $tarball"
tar --numeric-owner --xattrs --acls -C "$ROOTFS_DIR" -cf "$tarball.tmp" .
mv "$tarball.tmp" "$tarball"
# Keep one base only.
find "$CACHE_DIR" -maxdepth 1 -name "base-$RELEASE-arm64-*.tar" ! -path "$tarball" -delete
echo "$tarball"
