"""AMI: pyst2 0.5.1 behind a small interface that keeps the contract pyst2 does not.

pyst2 gives us the reader greenlets and the message framing rules. What it lacks is added,
each in the module that owns it:
- `message`: replies rebuilt from the raw lines (order, duplicate keys and whole values
  kept), the errors, and `AmiLike`, what callers need of a client. Pure.
- `actions`: GetConfig, CoreStatus, Reload, CoreShowChannels and the probe over any
  `AmiLike`, and what a refusal means for the operator (`write = config` missing, ...). Pure.
- `framing`: pyst2's framing rules applied chunk by chunk (pyst2 reads one byte per recv),
  with a plain reply (e.g. GetConfig, 200,000 lines for 10k accounts) found and parsed in
  bulk while it is still arriving. Pure.
- `session`: one pyst2 connection with its own socket (timeout, TLS), chunked reads that
  yield to other greenlets, a cap on reply size and on messages nobody asked for, a
  `close()` that never blocks (pyst2's `close()`/`logoff()` can block forever), and
  answers checked against the request's ActionID.
- `client`: `AmiClient`, one deadline per call (`gevent.Timeout`), one session at a time,
  thrown away after any doubt (pyst2 matches replies by order: after one lost reply every
  later caller would get the wrong one), login with `Events: off`, a fresh dict per action.
Everything becomes `AmiTransportError` (no usable answer) or `AmiResponseError` (the peer
answered `Response: Error`).

The client needs `gevent.monkey.patch_all()` before anything is imported: pyst2's threads
must be greenlets for the deadlines to interrupt them.

This package's namespace holds the pure part only (message and actions), so that the pure
layer can speak of AMI without loading a transport; the client is `synch.ami.client`.
"""

from synch.ami.actions import (
    branch_calls,
    core_status,
    get_config,
    pjsip_contacts,
    probe_once,
    reload_module,
)
from synch.ami.message import (
    AmiError,
    AmiLike,
    AmiReply,
    AmiResponseError,
    AmiTransportError,
    parse_reply,
)

__all__ = [
    "AmiError",
    "AmiLike",
    "AmiReply",
    "AmiResponseError",
    "AmiTransportError",
    "branch_calls",
    "core_status",
    "get_config",
    "parse_reply",
    "pjsip_contacts",
    "probe_once",
    "reload_module",
]
