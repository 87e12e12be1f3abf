# Services may start again once the image boots.
if grep -qs '^# synch-stage' /usr/sbin/policy-rc.d; then
	rm -f /usr/sbin/policy-rc.d
fi
# Per-device: made at first boot.
rm -f /etc/ssh/ssh_host_*
# A bind-mounted package cache (image/build.sh) is left alone.
if ! mountpoint -q /root/.cache/pip; then
	rm -rf /root/.cache/pip
fi
apt-get clean
# 190 MB of package lists (sid's among them) are stale by the time a card is flashed.
rm -rf /var/lib/apt/lists/*
