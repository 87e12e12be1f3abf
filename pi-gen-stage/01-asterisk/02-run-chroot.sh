# Asterisk runs as asterisk and must read its 0640 files; synch (same user) writes its
# include and keeps the directory as a git repository.
chown -R asterisk:asterisk /etc/asterisk
chmod 2750 /etc/asterisk
systemctl enable asterisk.service
