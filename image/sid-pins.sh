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
# The simulations run the host's apt on the root's state: natively, so each takes seconds.
host_apt=(apt-get -o "Dir=$ROOTFS_DIR" -o APT::Architecture=arm64 -o Debug::NoLocking=1
	-o "Dir::State::status=$ROOTFS_DIR/var/lib/dpkg/status")
for _ in $(seq 1 60); do
	cat >"$ROOTFS_DIR/etc/apt/preferences.d/zz-sid-pins.pref" <<-EOF
		Package: *
		Pin: release n=sid
		Pin-Priority: -10

		Package: $pins
		Pin: release n=sid
		Pin-Priority: 500
	EOF
	out="$("${host_apt[@]}" install -s --no-install-recommends $WANT 2>&1 || true)"
	# " X : Depends: Y (>= V) but W is to be installed" (later lines of X start with spaces):
	# Y must come from sid; with an upper bound ("Y (< V)"), or "Y (= V)" from a trixie X,
	# X is the one to take from sid.
	new="$(awk -v pins=" $pins " '
		/^ [a-z0-9][^ ]* : (Pre)?Depends: / { cur = $1; sub(/:[a-z0-9]+$/, "", cur); $1 = ""; $2 = "" }
		/^ +(Pre)?Depends: / && / but / {
			line = $0; sub(/^ *(Pre)?Depends: */, "", line); split(line, w, " ")
			upper = (w[2] ~ /^\((<|<<|<=)$/) || (w[2] == "(=" && index(pins, " " cur " ") == 0)
			print upper ? cur : w[1]
		}' <<<"$out" | sed 's/:[a-z0-9]*$//' | sort -u)"
	echo "sid-pins: $pins" >&2
	added=0
	for p in $new; do
		case " $pins " in *" $p "*) ;; *) pins="$pins $p"; added=1 ;; esac
	done
	if [ "$added" = 0 ]; then
		if grep -q '^Inst asterisk ' <<<"$out"; then
			# Pin whole source packages: a library's siblings (libc6-dev, perl) follow it.
			for p in $(grep '^Inst' <<<"$out" | grep unstable | awk '{print $2}'); do
				"${host_apt[@]/apt-get/apt-cache}" show "$p/sid" 2>/dev/null |
					sed -n 's/^Source: \([^ ]*\).*/src:\1/p; s/^Package: \(.*\)/src:\1/p' | tail -n 1
			done | sort -u | tr '\n' ' '
			echo
			grep '^Inst' <<<"$out" | grep -c unstable | sed 's/^/sid-pins: packages from sid: /' >&2
			exit 0
		fi
		echo "$out" >&2
		die "apt cannot install $WANT and names nothing to pin"
	fi
done
die "no stable pin set after 60 rounds"
