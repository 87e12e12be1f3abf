# A venv of its own: synch's dependencies (gevent, pyst2, ...) stay out of the system python.
python3 -m venv /opt/synch
# Offline, from the wheels `make stage-files` downloaded for this python and arm64.
/opt/synch/bin/pip install --disable-pip-version-check -q --no-index \
	--find-links /var/tmp/synch-dist /var/tmp/synch-dist/synch-*.whl
rm -rf /var/tmp/synch-dist
ln -sf /opt/synch/bin/synch /usr/local/bin/synch

chown root:asterisk /etc/synch
chown asterisk:asterisk /etc/synch/appsettings.json
systemctl enable synch.service synch-first-boot.service
/opt/synch/bin/synch --help >/dev/null
