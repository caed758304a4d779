"""Development tools, not the runtime engine: the embedded PostgreSQL the test suite and ``make demo`` run.

Nothing of the engine or the doors imports this package; only tests, benchmarks, scripts and the
demo command do.
"""
