"""The `failover` section: what the branch adds to the synced AORs while it serves the phones
(contacts learned from the central, short registrations)."""

from __future__ import annotations

from synch.config.dnsservice import networks
from synch.config.reader import _Section
from synch.config.settings import FailoverSettings

MAX_EXPIRATION = 3600  # beyond an hour "short registrations" moves no phone


def _failover(sec: _Section) -> FailoverSettings:
    d = FailoverSettings()
    expiration = sec.integer("expiration", d.expiration, 0, MAX_EXPIRATION)
    if 0 < expiration < 30:
        sec.warn(
            "expiration",
            f"{expiration} s: most phones refuse or round up registrations under 30 s; "
            "60 is the default",
        )
    return FailoverSettings(
        mirrorcontacts=sec.boolean("mirrorcontacts", d.mirrorcontacts),
        contactsinterval=sec.seconds("contactsinterval", d.contactsinterval),
        contactnetworks=networks(
            sec,
            "contactnetworks",
            d.contactnetworks,
            'the networks of the phones that the branch reaches, e.g. ["192.168.1.0/24"]',
        ),
        expiration=expiration,
    )
