# The README's install on an existing host: apt brings synch's dependencies; its postinst
# makes the virtualenv /opt/synch from the wheels in the package (offline), gives the
# settings template (0600) to asterisk and enables synch.service. synch-appliance enables
# synch-first-boot.service and keeps a resolved stub listener off port 53.
apt-get -o Acquire::Retries=3 install -y -q --no-install-recommends /var/tmp/synch-debs/*.deb
rm -rf /var/tmp/synch-debs
synch --version
