"""The failover DNS, cut as dnslib cuts its server: resolvers apart from the transport.

Pure (no sockets, no greenlets):
- `state`: `DnsState`, the one source of truth for the current target and SOA serial
  (`view`); whoever switches the service state calls `follow(service)`.
- `resolver`: the vocabulary: `Answer` (the metric's label values), `Decision`, `Query`, and
  the `Resolver` protocol of the chain.
- `wire`: framing and packet helpers (TCP length prefix, bare error replies, UDP fitting).
- `zone`: `ZoneResolver`, the zone's answers for a view; first in the chain.
- `fastpath`: prepared replies of the zone, replayed without parsing.
- `acl`: the client allow list and the per-client rate limit.
- `service`: `DnsService`, a query's bytes in, a `Decision` out: allow list, fast path, the
  resolver chain, counting.

With sockets (gevent):
- `forward`: `Forwarder`, the exchange with the upstreams, and `ForwardResolver`, the
  forwarder as the chain's last resolver.
- `server`: `DnsServers`, the UDP loop (`serve_udp`, spawned by its owner) and the TCP server.
"""
