"""What stays out of the history: our own files and private keys (a managed block in
`.git/info/exclude`, which the operator's own git honours too), and the files git cannot read
(named in git's own messages, left out with a warning instead of failing the sync)."""

from __future__ import annotations

import re

# The managed block of .git/info/exclude. Our lock and in-flight temp files are not
# configuration; private keys must never enter a history that is copied around with backups.
OWN_FILES = (".synch.lock", ".*.tmp", "pjsip_synch_failover.conf")  # the last: runtime state
PRIVATE_KEYS = (
    "*.key", "*.pem", "*.p12", "*.pfx", "*.jks", "*.keystore",
    "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", "keys/", "private/",
)
EXCLUDE_BEGIN = "# >>> synch: managed block, rewritten by synch (add your own lines outside it)"
EXCLUDE_END = "# <<< synch"
# What `git status` and `git add` say about a path they could not read.
_UNREADABLE = (
    re.compile(r"^warning: could not open directory '(?P<path>.+)': (?P<why>.+)$"),
    re.compile(r"^error: open\(\"(?P<path>.+)\"\): (?P<why>.+)$"),
    re.compile(r"^(?P<path>[^:]+): (?P<why>Permission denied)$"),
)


def with_managed_block(current: str) -> str:
    """`current` (the operator's lines kept, in order) with our block at the end."""
    ours = (*OWN_FILES, *PRIVATE_KEYS)
    kept, inside = [], False
    for line in current.splitlines():
        if line == EXCLUDE_BEGIN:
            inside = True
        elif line == EXCLUDE_END:
            inside = False
        elif not inside and line not in ours:  # a bare copy: what older versions appended
            kept.append(line)
    block = [EXCLUDE_BEGIN, *ours, EXCLUDE_END]
    return "".join(f"{line}\n" for line in (*kept, *block))


def unreadable(stderr: str) -> dict[str, str]:
    """Path → reason, for each path git reported it could not read."""
    found = {}
    for line in stderr.splitlines():
        for pattern in _UNREADABLE:
            match = pattern.match(line.strip())
            if match:
                found[match["path"]] = match["why"]
                break
    return found
