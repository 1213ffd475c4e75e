"""Local tooling: the Functions host stand-in, `make run`, and the infra scan."""
