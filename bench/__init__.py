"""`make bench` (`python -m bench`): every figure against a baseline measured in the same run.

Absolute times on a shared 2-core machine are noise, so each load figure is a ratio against a
bare gRPC echo service served over the same mTLS setup and driven by the same load generator.
Servers and the load generator each run in their own process. See `python -m bench --help`.
"""
