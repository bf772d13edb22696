"""Apply: execute a plan phase by phase, gathering facts again between phases.

Phases (``planning.model.Phase``): server keys, then the admin repository (whose
commit needs those keys), then known_hosts, settings, repositories, remotes and
hooks, then refs. After each phase that did something the facts are gathered
again and the plan made afresh, so every later action is planned on what the
servers really hold. Finally the facts are gathered once more to verify.
"""

from __future__ import annotations

import base64
import getpass
import json
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from reconciler import git
from reconciler.admin_checkout import COMMITTED_WITH_RENDERING, gather_checkout
from reconciler.desired import Desired
from reconciler.errors import HostKeyError, ReconcilerError
from reconciler.facts import Facts
from reconciler.gather import gather_facts, run_json_program
from reconciler.planning import Action, Plan, PlanContext, PlanOptions, make_plan
from reconciler.planning.admin import BUNDLE, HEAD
from reconciler.planning.bootstrap import ADMIN_SUBJECT
from reconciler.planning.model import ADMIN_CHECKOUT
from reconciler.refs import RefReport, gather_ref_report
from reconciler.report import Reporter
from reconciler.transport import Transport

MAX_ROUNDS = 8
EXECUTE_TIMEOUT = 3600.0
# How long a server's execute program waits for the server lock that another run's
# program holds (a second operator, or the programs of a run that was just killed
# and have not noticed yet); then that server is left alone for the rest of the run.
SERVER_LOCK_WAIT = 30.0
LOCK_WAIT_ENV = "RECONCILER_LOCK_WAIT"
COMMIT_MESSAGE = "reconcile: render gitosis.conf and keydir/ from cluster.d/"


@dataclass(frozen=True)
class ActionResult:
    action: Action
    ok: bool
    error: str = ""


@dataclass
class Outcome:
    first_plan: Plan
    final_plan: Plan | None = None
    results: list[ActionResult] = field(default_factory=list)
    declined: bool = False
    # What the final plan was made from (the servers as apply left them): for status.
    facts: Facts | None = None
    refs: RefReport | None = None
    # Servers left alone because another run held their lock: server -> why.
    stopped: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> list[ActionResult]:
        return [r for r in self.results if not r.ok]

    def exit_code(self) -> int:
        final = self.final_plan or self.first_plan
        if self.failed or final.errors:
            return 1
        if final.conflicts:
            return 3
        if final.actions:
            return 1  # not converged: something changed behind apply's back
        return 0


def plan_cluster(
    desired: Desired,
    transports: dict[str, Transport],
    options: PlanOptions,
    reporter: Reporter | None = None,
) -> tuple[Plan, Facts]:
    """Gather facts and plan. The checkout facts come from the operator's side."""
    plan, facts, _refs = _plan(desired, transports, options, reporter)
    return plan, facts


def _plan(
    desired: Desired,
    transports: dict[str, Transport],
    options: PlanOptions,
    reporter: Reporter | None = None,
) -> tuple[Plan, Facts, RefReport]:
    facts = gather_facts(desired, transports, reporter)
    checkout = gather_checkout(desired, facts)
    refs = gather_ref_report(desired, facts, {n: transports[n] for n in facts.servers})
    return make_plan(PlanContext(desired, facts, checkout, options, refs)), facts, refs


def _key(action: Action) -> tuple[str, str, str, str]:
    """What makes an action the same one again: a failed action is not retried in
    this run, but one whose operations changed (a queue drain with entries that were
    settled only by this run's ref pushes) is a new action."""
    return (action.server, action.subject, action.target, json.dumps(action.ops, sort_keys=True))


def server_lock_wait() -> float:
    """Seconds to wait for a server's lock: ``SERVER_LOCK_WAIT`` or ``$RECONCILER_LOCK_WAIT``."""
    text = os.environ.get(LOCK_WAIT_ENV, "").strip()
    if not text:
        return SERVER_LOCK_WAIT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= EXECUTE_TIMEOUT:
        raise ReconcilerError(
            f"{LOCK_WAIT_ENV}={text!r} is not a number of seconds from 0 to {EXECUTE_TIMEOUT:.0f}"
        )
    return value


def lock_holder(root: object) -> str:
    """Who this run is, as the server lock records it for whoever waits on it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"reconcile apply by {user}@{socket.gethostname()} (pid {os.getpid()}, {root})"


class _Executor:
    def __init__(self, desired: Desired, transports: dict[str, Transport], reporter: Reporter):
        self.desired = desired
        self.transports = transports
        self.reporter = reporter
        self.admin: tuple[str, str] | None = None
        self.lock_wait = server_lock_wait()
        self.holder = lock_holder(desired.root)
        self.stopped: dict[str, str] = {}

    def _admin_values(self) -> tuple[str, str]:
        """The checkout's commit and a bundle of it, made once per commit."""
        if self.admin is None:
            root = self.desired.root
            head = git.head(root)
            if head is None:
                raise ReconcilerError(f"{root}: the admin checkout has no commit to send")
            self.admin = (head, base64.b64encode(git.bundle(root, "HEAD")).decode())
        return self.admin

    def _resolve(self, op: dict[str, Any]) -> dict[str, Any]:
        if op.get("new") == HEAD or op.get("bundle") == BUNDLE:
            commit, bundle = self._admin_values()
            return {**op, "new": commit, "bundle": bundle}
        return op

    def run_local(self, action: Action) -> ActionResult:
        try:
            for op in action.ops:
                if op["op"] == "local_commit":
                    commit = git.commit_files(
                        self.desired.root,
                        op["files"],
                        COMMIT_MESSAGE,
                        COMMITTED_WITH_RENDERING,
                        remove=tuple(op.get("remove", ())),
                    )
                    self.admin = None  # a new commit: bundle again
                    self.reporter.info(f"{ADMIN_CHECKOUT}: committed {commit[:12]}")
        except ReconcilerError as exc:
            return ActionResult(action, False, str(exc))
        return ActionResult(action, True)

    def run_server(self, server: str, actions: list[Action]) -> list[ActionResult]:
        # Creating the git user needs root; everything else runs as the git user.
        as_admin = [a for a in actions if a.subject == ADMIN_SUBJECT]
        rest = [a for a in actions if a.subject != ADMIN_SUBJECT]
        results = self._run_batch(server, as_admin, as_admin=True) if as_admin else []
        return results + (self._run_batch(server, rest, as_admin=False) if rest else [])

    def _run_batch(
        self, server: str, actions: list[Action], *, as_admin: bool
    ) -> list[ActionResult]:
        try:
            payload = {
                "actions": [[self._resolve(op) for op in a.ops] for a in actions],
                "repositories": self.desired.servers[server].repositories,
                "lock_wait": self.lock_wait,
                "holder": self.holder,
                "lock": not as_admin,
            }
            answer = run_json_program(
                self.transports[server],
                "execute",
                payload,
                timeout=EXECUTE_TIMEOUT,
                as_admin=as_admin,
            )
            if answer.get("stop"):
                # Nothing was changed there; it is not tried again in this run.
                self.stopped[server] = str(answer["stop"])
                return [ActionResult(a, False, self.stopped[server]) for a in actions]
            if answer.get("waited_for"):
                self.reporter.info(
                    f"{server}: waited {float(answer.get('waited', 0)):.1f}s for the server "
                    f"lock, held by {answer['waited_for']}"
                )
            results = answer["results"]
        except (ReconcilerError, KeyError, TypeError, AttributeError, ValueError) as exc:
            return [ActionResult(a, False, str(exc)) for a in actions]
        return [
            ActionResult(a, bool(r.get("ok")), str(r.get("error", "")))
            for a, r in zip(actions, results, strict=False)
        ]

    def execute(self, actions: list[Action]) -> list[ActionResult]:
        results = [self.run_local(a) for a in actions if a.server == ADMIN_CHECKOUT]
        if any(not r.ok for r in results):
            # Without the admin commit there is nothing to send to the servers.
            skipped = [a for a in actions if a.server != ADMIN_CHECKOUT and a.subject == "admin"]
            results += [ActionResult(a, False, "skipped: the admin commit failed") for a in skipped]
            actions = [a for a in actions if a not in skipped]
        by_server: dict[str, list[Action]] = {}
        for action in actions:
            if action.server != ADMIN_CHECKOUT:
                by_server.setdefault(action.server, []).append(action)
        with ThreadPoolExecutor(max_workers=max(1, len(by_server))) as pool:
            futures = [pool.submit(self.run_server, s, a) for s, a in by_server.items()]
            for future in futures:
                results += future.result()
        return results


def apply_cluster(
    desired: Desired,
    transports: dict[str, Transport],
    options: PlanOptions,
    reporter: Reporter | None = None,
    *,
    confirm: Callable[[Plan], bool] | None = None,
) -> Outcome:
    reporter = reporter or Reporter()
    plan, facts, refs = _plan(desired, transports, options, reporter)
    refused = [str(e) for e in facts.errors.values() if isinstance(e, HostKeyError)]
    if refused:
        # Whoever answered in that server's place must not steer changes anywhere.
        raise ReconcilerError(f"{'; '.join(refused)}; nothing was changed on any server")
    outcome = Outcome(first_plan=plan, facts=facts, refs=refs)
    if not plan.actions:
        outcome.final_plan = plan
        return outcome
    if confirm is not None and not confirm(plan):
        outcome.declined = True
        return outcome
    executor = _Executor(desired, transports, reporter)
    attempted: set[tuple[str, str, str, str]] = set()
    for _round in range(MAX_ROUNDS):
        pending = [
            a for a in plan.actions if _key(a) not in attempted and a.server not in executor.stopped
        ]
        if not pending:
            break
        phase = min(a.phase for a in pending)
        batch = [a for a in pending if a.phase == phase]
        warned: set[str] = set()
        for result in executor.execute(batch):
            attempted.add(_key(result.action))
            outcome.results.append(result)
            server = result.action.server
            if result.ok or executor.stopped.get(server) != result.error:
                reporter.action_done(result.action, result.ok, result.error)
            elif server not in warned:  # one line for the server, not one per action
                warned.add(server)
                reporter.warning(f"{server}: left alone: {result.error}")
        plan, outcome.facts, outcome.refs = _plan(desired, transports, options, reporter)
    outcome.final_plan = plan
    outcome.stopped = dict(executor.stopped)
    return outcome
