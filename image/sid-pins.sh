#!/bin/bash
# Find the smallest set of packages Debian sid's Asterisk needs from sid on a trixie root:
# start from Asterisk's own packages, ask apt for a simulated install with everything else
# pinned to trixie, and add each package apt says trixie cannot satisfy. Prints the list for
# pi-gen-stage/00-asterisk-from-sid/files/synch-asterisk.pref (sid moves: rerun when the
# stage's asterisk install fails on a dependency).
#
# Usage: image/sid-pins.sh ROOTFS_DIR   (a trixie root, e.g. the cached base unpacked)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=image/lib.sh
source "$HERE/lib.sh"
ROOTFS_DIR="$(realpath "${1:?trixie root filesystem}")"
export ROOTFS_DIR
STAGE_FILES="$HERE/../pi-gen-stage/00-asterisk-from-sid/files"
WANT="asterisk asterisk-modules asterisk-core-sounds-en-gsm"
pins="asterisk asterisk-*"

ensure_binfmt
chroot_mount "$ROOTFS_DIR"
trap 'chroot_umount "$ROOTFS_DIR"; rm -f "$ROOTFS_DIR/etc/apt/preferences.d/zz-sid-pins.pref" "$ROOTFS_DIR/etc/apt/sources.list.d/debian-sid.sources"' EXIT
install -m 644 "$STAGE_FILES/debian-sid.sources" "$ROOTFS_DIR/etc/apt/sources.list.d/"
on_chroot <<<"apt-get update -qq"
for _ in $(seq 1 30); do
	cat >"$ROOTFS_DIR/etc/apt/preferences.d/zz-sid-pins.pref" <<-EOF
		Package: *
		Pin: release n=sid
		Pin-Priority: -10

		Package: $pins
		Pin: release n=sid
		Pin-Priority: 500
	EOF
	out="$(on_chroot <<<"apt-get install -s --no-install-recommends $WANT 2>&1" || true)"
	# "Depends: libc6 (>= 2.42) but 2.41-12 is to be installed" / "but it is not installable"
	new="$(grep -oE 'Depends: [a-z0-9][a-z0-9.+-]+ .*(is to be installed|not installable|not going to be installed)' <<<"$out" |
		awk '{print $2}' | sort -u)"
	added=0
	for p in $new; do
		case " $pins " in *" $p "*) ;; *) pins="$pins $p"; added=1 ;; esac
	done
	if [ "$added" = 0 ]; then
		if grep -q '^Inst asterisk ' <<<"$out"; then
			echo "$pins"
			exit 0
		fi
		echo "$out" >&2
		die "apt cannot install $WANT and names nothing to pin"
	fi
done
die "no stable pin set after 30 rounds"
