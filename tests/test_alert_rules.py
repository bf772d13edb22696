"""The sample alerting rules in docs/ pass the real promtool, and name real metrics."""

from __future__ import annotations

import re
from pathlib import Path

from reconciler.metrics import RunInfo, status_families
from reconciler.status import ServerHealth, StatusReport
from reconciler.testing.promtool import check_rules, requires_promtool, run_promtool

DOCS = Path(__file__).resolve().parent.parent / "docs" / "prometheus"
RULES = DOCS / "reconcile-alerts.yml"


@requires_promtool
def test_promtool_check_rules() -> None:
    out = check_rules(RULES)
    assert "SUCCESS" in out


@requires_promtool
def test_promtool_test_rules_the_alerts_fire_as_documented() -> None:
    done = run_promtool("test", "rules", str(DOCS / "reconcile-alerts.test.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_metric_in_the_rules_is_one_reconcile_writes() -> None:
    run = RunInfo(0.0, 1.0, 0, 0.0, applied=0, failed=0)
    report = StatusReport(1, (), (ServerHealth("alpha", True),))
    written = {f.name for f in status_families(report, run)}
    named = set(re.findall(r"\breconcile_[a-z_]+", RULES.read_text()))
    assert named and named <= written, named - written
