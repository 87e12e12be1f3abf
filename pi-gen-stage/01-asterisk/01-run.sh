#!/bin/bash -e
# The branch base configuration, over Debian's samples: AMI for synch only on 127.0.0.1
# (its secret is made at first boot), PJSIP with the include synch writes, a minimal
# dialplan, logging to the journal.
src="${STAGE_DIR}/files/appliance/asterisk"
[ -d "$src" ] || { echo "missing $src: run 'make stage-files' first" >&2; exit 1; }
for f in "$src"/*.conf; do
	install -m 640 "$f" "${ROOTFS_DIR}/etc/asterisk/"
done
