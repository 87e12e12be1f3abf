"""SIP, as much as a health probe needs: one OPTIONS request and its answer.

- `message`: the request built and the answer read, as bytes in and bytes out. Pure.
- `client`: `options_probe`, the exchange over UDP, TCP or TLS, bounded by a deadline, its
  reads capped (synch.sip.client; not imported here, so that the pure layer can speak of SIP
  without loading a transport).
"""

from synch.sip.message import (
    TRANSPORTS,
    OptionsRequest,
    SipResponse,
    SipResponseError,
    is_sip_user,
    options_request,
    parse_response,
    response_result,
)

__all__ = [
    "TRANSPORTS",
    "OptionsRequest",
    "SipResponse",
    "SipResponseError",
    "is_sip_user",
    "options_request",
    "parse_response",
    "response_result",
]
