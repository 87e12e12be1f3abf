"""How `synch` ends, as systemd reads it (appliance/synch.service: Restart=on-failure,
RestartPreventExitStatus=2)."""

OK = 0
FAILED = 1  # could not do what was asked (a port taken, a sync refused): systemd retries `run`
CONFIG = 2  # the configuration is refused: no restart can fix it, the journal says why
INTERNAL = 3  # an internal error stopped the daemon: systemd restarts it
