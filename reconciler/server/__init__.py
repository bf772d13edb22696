"""The server side: standard library only, Python 3.9, one module per managed subject.

Each subject's module holds its fact reader (called by ``gather``) beside its op
handlers (called by ``execute``), as pyinfra pairs ``facts/files.py`` with
``operations/files.py``: ``keys``, ``admin``, ``known_hosts``, ``ssh_config``,
``repositories``, ``remotes``, ``hooks``, ``refs``, ``queue``, ``pushes``, ``settings``,
``repository_settings``, ``files`` and ``library`` (this package installed on the
server, with the gitosis runtime's commands). ``common`` holds what they share:
atomic writes, locks, bounded commands, path confinement to the git user's home.

Programs reach a server in two ways. ``gather`` and ``execute`` are assembled at
send time: their modules' sources travel in one blob on stdin and a small bootstrap
imports them from it (``reconciler.transport.run_program``). The replication hook
(``replication``) and its drainer run from the copy of this package that apply
installs once per server (``library``); each repository's ``post-receive`` is a
stub that runs it (``hooks``).
"""
