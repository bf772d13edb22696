"""reconciler: run an active-active cluster of gitosis servers from declared state.

Importing the package must stay cheap: the server-side parts (``reconciler.gitosis``
and the replication hook) run on servers with nothing but the standard library.
"""

__version__ = "0.1.0"
