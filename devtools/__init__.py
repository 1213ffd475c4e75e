"""Developer and CI tooling shared by tests, benchmarks and the local host; never deployed (see .funcignore)."""
