"""Status socket: the `Action(token)` line protocol (pure) and its gevent TCP server."""
