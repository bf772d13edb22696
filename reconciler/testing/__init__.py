"""Helpers for tests and benchmarks: a cluster of real OpenSSH servers on 127.0.0.1.

Nothing in the project's runtime imports this package; it needs root (it creates
OS users and starts ``sshd``).
"""
