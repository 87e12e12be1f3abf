#!/bin/bash -e
# Asterisk comes from Debian sid: trixie (and so Raspberry Pi OS) has none. Pinning keeps
# everything else on trixie: sid is never a candidate except for the packages listed in
# synch-asterisk.pref, which are Asterisk's own and the few libraries its sid build needs
# newer than trixie has.
install -m 644 files/debian-sid.sources "${ROOTFS_DIR}/etc/apt/sources.list.d/"
install -m 644 files/synch-asterisk.pref "${ROOTFS_DIR}/etc/apt/preferences.d/"

# Package scripts must not start daemons inside the build chroot.
if [ ! -e "${ROOTFS_DIR}/usr/sbin/policy-rc.d" ]; then
	printf '#!/bin/sh\n# synch-stage: removed by 03-finish\nexit 101\n' >"${ROOTFS_DIR}/usr/sbin/policy-rc.d"
	chmod 755 "${ROOTFS_DIR}/usr/sbin/policy-rc.d"
fi

on_chroot <<- \EOF2
	apt-get -o Acquire::Retries=3 update
EOF2
