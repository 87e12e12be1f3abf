#!/bin/bash -e
# synch from the Debian packages `make stage-files` put in the stage's files/: the same
# synch package an existing host installs, and synch-appliance (the first boot).
files="${STAGE_DIR}/files"
if ! ls "$files"/synch_*.deb "$files"/synch-appliance_*.deb >/dev/null 2>&1; then
	echo "no synch packages in $files: run 'make stage-files' first" >&2
	exit 1
fi

install -d "${ROOTFS_DIR}/var/tmp/synch-debs"
install -m 644 "$files"/synch_*.deb "$files"/synch-appliance_*.deb "${ROOTFS_DIR}/var/tmp/synch-debs/"
if [ -f "$files/VERSION" ]; then
	install -m 644 "$files/VERSION" "${ROOTFS_DIR}/etc/synch-release"
fi
