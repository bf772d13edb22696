"""gitosis-compatible pieces: names, gitosis.conf, and the server runtime.

Everything in this package uses the standard library only, because it runs on
the git servers (see GITOSIS.md for the behaviour it reproduces).
"""
