"""Registry endpoint probes: DNS, TCP connect, TLS, `GET /v2/` and the auth challenge, each phase timed.

`model` holds the pure parts (result, verdict, challenge parsing, flap damping, interval choice),
`prober` the sockets, `component` the daemon's scheduled jobs, `cli` the `regwarden probe` command.
"""
