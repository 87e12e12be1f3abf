"""The failover DNS: the zone (pure), the forwarder and the UDP/TCP servers."""
