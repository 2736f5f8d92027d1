"""The runtime inside a worker: running executions, claiming work, leases."""
