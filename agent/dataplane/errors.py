"""The one error every backend raises for a kernel write that failed: the agent logs it
and retries at the next sync, it never crashes."""

from __future__ import annotations


class DataplaneError(RuntimeError):
    pass
