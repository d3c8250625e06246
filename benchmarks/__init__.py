"""Performance harness (not part of the test suite): `python benchmarks/run.py`, see run.py."""
