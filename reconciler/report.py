"""How the core tells the outside world what it is doing.

The core never prints. It is handed a ``Reporter`` and calls its hooks; the
default hooks do nothing, so library callers and tests get silence unless they
ask for more. The CLI supplies a reporter that writes to the terminal.
"""

from __future__ import annotations


class Reporter:
    """Hooks the core calls; every one does nothing by default."""

    def info(self, message: str) -> None:
        """A line worth showing a person (what changed, what was decided)."""

    def warning(self, message: str) -> None:
        """Something a person should look at; the run goes on."""

    def progress(self, message: str) -> None:
        """Long work under way (gathering, cloning); may be shown transiently."""
