"""The two kinds of failure a user can fix, shared by every module (CLI exit codes 2 and 4).

Each measuring module names its own subclass (ScanError, RecoveryError, SweepError, RuleError,
CalibrationError, DataError, TrainError), so messages stay specific while the command layer maps
one base class to one exit code (memaudit.exit_codes.code_of).
"""


class UsageError(Exception):
    """A bad option, setting or input file (CLI exit code 2)."""
