#!/bin/bash -e
# synch from the wheel `make stage-files` put in the stage's files/, and the appliance files.
files="${STAGE_DIR}/files"
if ! ls "$files"/synch-*.whl >/dev/null 2>&1; then
	echo "no synch wheel in $files: run 'make stage-files' first" >&2
	exit 1
fi
for f in appliance/synch.service appliance/appsettings.json \
	appliance/first-boot/synch_first_boot.py appliance/first-boot/synch-first-boot.service; do
	[ -f "$files/$f" ] || { echo "missing $files/$f: run 'make stage-files' first" >&2; exit 1; }
done

install -d "${ROOTFS_DIR}/var/tmp/synch-dist"
install -m 644 "$files"/synch-*.whl "$files"/wheels/*.whl "${ROOTFS_DIR}/var/tmp/synch-dist/"

install -m 644 "$files/appliance/synch.service" "${ROOTFS_DIR}/etc/systemd/system/"
install -m 644 "$files/appliance/first-boot/synch-first-boot.service" "${ROOTFS_DIR}/etc/systemd/system/"
install -D -m 755 "$files/appliance/first-boot/synch_first_boot.py" \
	"${ROOTFS_DIR}/usr/lib/synch/synch-first-boot"

# Default settings (the site's come as synch.json on the boot partition at first boot).
install -d -m 750 "${ROOTFS_DIR}/etc/synch"
install -m 600 "$files/appliance/appsettings.json" "${ROOTFS_DIR}/etc/synch/appsettings.json"
install -D -m 644 "$files/appliance/appsettings.json" \
	"${ROOTFS_DIR}/usr/share/doc/synch/appsettings.sample.json"
if [ -f "$files/VERSION" ]; then
	install -m 644 "$files/VERSION" "${ROOTFS_DIR}/etc/synch-release"
fi

# A resolver on 127.0.0.53:53 would keep synch from binding port 53.
install -d "${ROOTFS_DIR}/etc/systemd/resolved.conf.d"
printf '[Resolve]\nDNSStubListener=no\n' >"${ROOTFS_DIR}/etc/systemd/resolved.conf.d/synch.conf"
