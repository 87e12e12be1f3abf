"""End to end: central, branch and phones as network namespaces; failover as a phone sees it."""
