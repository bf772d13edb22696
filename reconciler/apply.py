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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler import git, pipeline
from reconciler.admin_checkout import COMMITTED_WITH_RENDERING
from reconciler.desired import Desired
from reconciler.errors import HostKeyError, ReconcilerError
from reconciler.facts import Facts
from reconciler.gather import run_json_program
from reconciler.planning import Action, Plan, PlanOptions
from reconciler.planning.admin import BUNDLE, HEAD
from reconciler.planning.bootstrap import ADMIN_SUBJECT
from reconciler.planning.model import ADMIN_CHECKOUT, BlobPacker
from reconciler.refs import RefReport
from reconciler.report import Reporter
from reconciler.server.ops import AdminUpdate, LocalCommit, Op
from reconciler.server_library import library_version
from reconciler.transport import Transport

if TYPE_CHECKING:
    from reconciler.saved_plan import SavedPlan

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
    saved: bool = False  # carrying out a saved plan (apply FILE)
    # Saved plans: actions apply found to do that the saved plan does not hold.
    unplanned: tuple[Action, ...] = ()

    @property
    def failed(self) -> list[ActionResult]:
        return [r for r in self.results if not r.ok]

    def exit_code(self) -> int:
        final = self.final_plan or self.first_plan
        if self.failed or final.errors:
            return 1
        if final.conflicts:
            return 3
        if final.actions and self.saved and len(self.unplanned) == len(final.actions):
            return 2  # what is left was not in the saved plan: plan again
        if final.actions:
            return 1  # not converged: something changed behind apply's back
        return 0


def _key(action: Action) -> tuple[str, str, str, str]:
    """What makes an action the same one again: a failed action is not retried in
    this run, but one whose operations changed (a queue drain with entries that were
    settled only by this run's ref pushes) is a new action."""
    ops = [op.to_json() for op in action.ops]
    return (action.server, action.subject, action.target, json.dumps(ops, sort_keys=True))


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

    def _resolve(self, op: Op) -> dict[str, Any]:
        """The op's JSON as sent, the admin commit's placeholders filled in."""
        if isinstance(op, AdminUpdate) and (op.new == HEAD or op.bundle == BUNDLE):
            commit, bundle = self._admin_values()
            op = replace(op, new=commit, bundle=bundle)
        return op.to_json()

    def run_local(self, action: Action) -> ActionResult:
        try:
            for op in action.ops:
                if isinstance(op, LocalCommit):
                    commit = git.commit_files(
                        self.desired.root,
                        op.files,
                        COMMIT_MESSAGE,
                        COMMITTED_WITH_RENDERING,
                        remove=op.remove,
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
    plan, observed = pipeline.plan_cluster(desired, transports, options, reporter)
    _refuse_host_keys(observed.facts)
    outcome = Outcome(first_plan=plan, facts=observed.facts, refs=observed.refs)
    if not plan.actions:
        outcome.final_plan = plan
        return outcome
    if confirm is not None and not confirm(plan):
        outcome.declined = True
        return outcome
    _carry_out(desired, transports, options, reporter, outcome, plan)
    return outcome


def apply_saved_plan(
    desired: Desired,
    transports: dict[str, Transport],
    saved: SavedPlan,
    path: Path,
    reporter: Reporter | None = None,
) -> Outcome:
    """Carry out a saved plan, and nothing else (README: "Saved plans").

    Refused, before anything changes, when the desired state or a server's facts
    differ from what the plan was made from. The first phase carries out the saved
    actions. Every later phase is planned again on what the servers hold then, and an
    action of it is carried out only when the saved plan holds the same action: same
    server, subject, kind, target and ops. The admin commit is the one exception: its
    files are rendered at apply time (like the commit and bundle that fill ``@HEAD``
    and ``@BUNDLE``), with the server keys the plan's first phase generated, so an
    admin action matches on server, subject, kind and target. Actions the saved plan
    does not hold are left pending (``Outcome.unplanned``) for the next plan.
    """
    from reconciler.saved_plan import (
        check_unchanged,
        desired_identity,
        fingerprint_facts,
        plan_differences,
    )

    reporter = reporter or Reporter()
    if library_version() != saved.options.library:
        raise ReconcilerError(
            f"{path} was made by a reconcile with another server library "
            f"(version {saved.version}); run plan again with this one "
            "(nothing was changed on any server)"
        )
    options = PlanOptions(
        replace_foreign=saved.options.replace_foreign,
        prune=saved.options.prune,
        only_servers=saved.options.servers,
        stamp=saved.options.stamp,
    )
    plan, observed = pipeline.plan_cluster(desired, transports, options, reporter)
    _refuse_host_keys(observed.facts)
    check_unchanged(
        saved,
        desired_identity(desired.root, observed.checkout),
        fingerprint_facts(observed.facts, desired.servers),
        path=path,
    )
    packer = BlobPacker()
    differences = plan_differences(saved.plan, plan, packer.key)
    if differences:
        raise ReconcilerError(
            f"{path}: the same facts give a different plan with this reconcile ("
            f"{'; '.join(differences[:4])}); run plan again (nothing was changed on any server)"
        )
    outcome = Outcome(first_plan=saved.plan, facts=observed.facts, refs=observed.refs, saved=True)
    if not saved.plan.actions:
        outcome.final_plan = plan
        return outcome
    in_plan = {_saved_key(a, packer) for a in saved.plan.actions}

    def allowed(action: Action) -> bool:
        return _saved_key(action, packer) in in_plan

    _carry_out(desired, transports, options, reporter, outcome, saved.plan, allowed)
    outcome.unplanned = tuple(a for a in (outcome.final_plan or plan).actions if not allowed(a))
    return outcome


def _saved_key(action: Action, packer: BlobPacker) -> str:
    if action.subject == "admin":
        return json.dumps([action.server, action.subject, action.kind, action.target])
    return packer.key(action)


def _refuse_host_keys(facts: Facts) -> None:
    refused = [str(e) for e in facts.errors.values() if isinstance(e, HostKeyError)]
    if refused:
        # Whoever answered in that server's place must not steer changes anywhere.
        raise ReconcilerError(f"{'; '.join(refused)}; nothing was changed on any server")


def _carry_out(
    desired: Desired,
    transports: dict[str, Transport],
    options: PlanOptions,
    reporter: Reporter,
    outcome: Outcome,
    plan: Plan,
    allowed: Callable[[Action], bool] | None = None,
) -> None:
    """Phase by phase: the lowest phase still pending, then gather and plan again."""
    executor = _Executor(desired, transports, reporter)
    attempted: set[tuple[str, str, str, str]] = set()
    for _round in range(MAX_ROUNDS):
        pending = [
            a for a in plan.actions if _key(a) not in attempted and a.server not in executor.stopped
        ]
        if allowed is not None:
            pending = [a for a in pending if allowed(a)]
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
        plan, observed = pipeline.plan_cluster(desired, transports, options, reporter)
        outcome.facts, outcome.refs = observed.facts, observed.refs
    outcome.final_plan = plan
    outcome.stopped = dict(executor.stopped)
