"""Verdicts: every rule that turns measurements into memorizing / generalizing / inconclusive.

    scan.py       the scan rule (data: memaudit/calibration/rule.json or provisional.json) —
                  Rule, Evidence, Decision, load_rule, gate_exit_code, list_rules
    recovery.py   the recovery rule (data: recovery_rule.json) — RecoveryRule, RECOVERY_RULE
    labels.py     ground-truth labels of reference models from their recovery verdict
    fit.py        fitting the scan rule to labelled reference points (`memaudit calibrate`)

Rules read statistics (memaudit.stats) and never measure anything themselves. fit.py is not
imported here: `from memaudit.verdict.fit import derive_rule`.
"""
from .labels import FULL_RECALL, LABELS, ground_truth
from .recovery import RECOVERY_RULE, RecoveryRule
from .scan import (CALIBRATED_RULE, CALIBRATION_DIR, DEFAULT_RULE, FAIL_ON, GATE_CODES, STATUSES, VERDICTS, Decision,
                   Evidence, Rule, RuleError, gate_exit_code, list_rules, load_rule)

__all__ = ["CALIBRATED_RULE", "CALIBRATION_DIR", "DEFAULT_RULE", "FAIL_ON", "FULL_RECALL", "GATE_CODES", "LABELS",
           "RECOVERY_RULE", "STATUSES", "VERDICTS", "Decision", "Evidence", "RecoveryRule", "Rule", "RuleError",
           "gate_exit_code", "ground_truth", "list_rules", "load_rule"]
