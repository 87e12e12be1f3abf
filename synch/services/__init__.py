"""The daemon's services: each owns one duty, its state and its loop, and offers its part of
the status (`details()`). The controller (synch.daemon) builds them once, wires them together
and runs their loops in its greenlet group.

- probing: probes the central, keeps the probe arithmetic, decides the service state;
- syncing: schedules sync cycles, holds their lock, records their results;
- branch: checks that the branch's own Asterisk answers AMI;
- budget: keeps the failover budget current (at start, after each sync);
- watchdog: feeds systemd's watchdog while the daemon serves;
- status: the status socket's view of them all (GetStatus, GetDetails, admin actions).
"""
