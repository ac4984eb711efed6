"""The base class of every usage error a user can fix (CLI exit code 2), shared by every module.
A checkpoint that cannot be loaded is the other kind a user can fix: adapters.LoadError, exit 4.

Each measuring module names its own subclass (ScanError, RecoveryError, SweepError, BatchError,
BackendError, ValidationError, BudgetError, RuleError, CalibrationError, DataError, TrainError), so
messages stay specific while the command layer maps one base class to one exit code
(memaudit.exit_codes.code_of).
"""


class UsageError(Exception):
    """A bad option, setting or input file (CLI exit code 2)."""
