"""Programs that run on the servers, sent over the channel as ``python3`` source.

Each module here is a standalone, stdlib-only script: it reads its input as JSON
from stdin and prints its answer as JSON on stdout. They never import from the
reconciler package, because the servers do not have it installed.
"""
