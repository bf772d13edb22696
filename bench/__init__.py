"""Benchmarks against the floor (issue 6): ``python -m bench --size tiny|full``.

Each figure is the median of several runs and is printed as a ratio to a floor
measured in the same run, interleaved with it, on the same real-sshd cluster
(``reconciler.testing.cluster``). See ``docs/performance.md``.
"""
