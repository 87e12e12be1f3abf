#!/bin/bash
# Root filesystem tree -> raw disk image with a FAT boot partition and an ext4 root, as
# pi-gen's export lays out a Raspberry Pi card, without loop devices or mounts:
# mkfs.vfat + mcopy, mkfs.ext4 -d, sfdisk, dd into place.
#
# The boot partition gets the tree's /boot/firmware (the Raspberry Pi firmware and kernel
# when pi-gen built it) plus, when the tree has Debian's generic kernel, vmlinuz and
# initrd.img for `qemu-system-aarch64 -M virt -kernel/-initrd`.
#
# Usage: image/assemble.sh ROOTFS_DIR OUT.img
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=image/lib.sh
source "$HERE/lib.sh"

ROOTFS_DIR="$(realpath "${1:?root filesystem}")"
OUT="${2:?output image}"
BOOT_MIB="${BOOT_MIB:-256}"
ALIGN_MIB=4

for m in proc sys dev run tmp; do
	! mountpoint -q "$ROOTFS_DIR/$m" || die "$ROOTFS_DIR/$m is still mounted"
done
tmp="$(mktemp -d "${OUT%/*}/.assemble.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

progress "assemble: boot partition (FAT, ${BOOT_MIB} MiB)"
mkdir -p "$tmp/boot"
if [ -d "$ROOTFS_DIR/boot/firmware" ]; then
	cp -a "$ROOTFS_DIR/boot/firmware/." "$tmp/boot/"
fi
kernel="$(find "$ROOTFS_DIR/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n 1)"
if [ -n "$kernel" ]; then
	cp "$kernel" "$tmp/boot/vmlinuz"
	cp "$ROOTFS_DIR/boot/initrd.img-${kernel##*/vmlinuz-}" "$tmp/boot/initrd.img"
fi
if [ -f "$HERE/../appliance/first-boot/README-boot.txt" ]; then
	cp "$HERE/../appliance/first-boot/README-boot.txt" "$tmp/boot/README-synch.txt"
fi
mkfs.vfat -n bootfs -F 32 -C "$tmp/boot.img" $((BOOT_MIB * 1024)) >/dev/null 2>&1 || die "mkfs.vfat failed"
if [ -n "$(ls -A "$tmp/boot")" ]; then
	mcopy -s -i "$tmp/boot.img" "$tmp/boot"/* ::
fi

# Room for the tree plus a quarter and 512 MiB: logs, git history, package updates.
used_mib="$(du -sx --block-size=1M "$ROOTFS_DIR" | cut -f1)"
root_mib=$(((used_mib * 5 / 4 + 512 + ALIGN_MIB - 1) / ALIGN_MIB * ALIGN_MIB))
progress "assemble: root partition (ext4, ${root_mib} MiB for ${used_mib} MiB of files)"
nice -n 10 mkfs.ext4 -q -L rootfs -d "$ROOTFS_DIR" "$tmp/root.img" "${root_mib}M"

progress "assemble: disk image $OUT"
boot_start=$((ALIGN_MIB * 2048))
boot_sectors=$((BOOT_MIB * 2048))
root_start=$((boot_start + boot_sectors))
root_sectors=$((root_mib * 2048))
rm -f "$OUT"
truncate -s $(((root_start + root_sectors) * 512)) "$OUT"
sfdisk -q "$OUT" <<EOF
label: dos
unit: sectors

start=$boot_start, size=$boot_sectors, type=c, bootable
start=$root_start, size=$root_sectors, type=83
EOF
dd if="$tmp/boot.img" of="$OUT" bs=4M seek=$((boot_start * 512)) oflag=seek_bytes conv=notrunc,sparse status=none
dd if="$tmp/root.img" of="$OUT" bs=4M seek=$((root_start * 512)) oflag=seek_bytes conv=notrunc,sparse status=none
progress "assemble: done, $(du -h --apparent-size "$OUT" | cut -f1) ($(du -h "$OUT" | cut -f1) allocated)"
