"""How the core tells the outside world what it is doing.

The core never prints. It is handed a ``Reporter`` and calls its hooks; the
default hooks do nothing (``action_done`` passes one line to ``info`` or
``warning``), so library callers and tests get silence unless they ask for more.
The CLI supplies a reporter that writes to the terminal, or log lines in cron mode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconciler.planning.model import Action


class Reporter:
    """Hooks the core calls; every one does nothing by default."""

    def info(self, message: str) -> None:
        """A line worth showing a person (what changed, what was decided)."""

    def warning(self, message: str) -> None:
        """Something a person should look at; the run goes on."""

    def progress(self, message: str) -> None:
        """Long work under way (gathering, cloning); may be shown transiently."""

    def action_done(self, action: Action, ok: bool, error: str = "") -> None:
        """An action of the plan was carried out (``ok``), or failed with ``error``."""
        line = f"{action.server}: {action.symbol} {action.description}"
        if ok:
            self.info(line)
        else:
            self.warning(f"{line}: FAILED: {error}")
