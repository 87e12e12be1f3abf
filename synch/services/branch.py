"""Is the branch's own Asterisk answering AMI? Failing phones over to a dead branch helps no
one: the status, a metric and the log say so."""

from __future__ import annotations

import logging

import gevent.event

from synch.ami import AmiError
from synch.ami.client import AmiClient
from synch.metrics import Metrics

log = logging.getLogger("synch")

CHECK_SECONDS = 15.0


class BranchCheck:
    def __init__(self, client: AmiClient, metrics: Metrics):
        self.client = client
        self.metrics = metrics
        self.reachable: bool | None = None  # None: not checked yet

    def run(self, stop: gevent.event.Event) -> None:
        while not stop.is_set():
            self.check()
            stop.wait(CHECK_SECONDS)

    def check(self) -> None:
        try:
            self.client.ping()
            reachable = True
        except AmiError as exc:
            reachable = False
            if self.reachable is not False:
                log.warning("branch Asterisk AMI not answering: %s", exc)
        if reachable and self.reachable is False:
            log.info("branch Asterisk AMI answering again")
        self.reachable = reachable
        self.metrics.branch_ami_up.set(1 if reachable else 0)

    def details(self) -> dict[str, object]:
        return {"BranchReachable": self.reachable}
