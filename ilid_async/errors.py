"""The two kinds of failure (docs/architecture.md): a user error stops the command with one line and exit
code 2; an item error is recorded on its item and never stops the run."""

import errno

__all__ = ["UserError", "ItemError", "NO_SPACE_ERRNOS"]

# OSError numbers that mean there is no room to write: a full disk, a quota, a file size limit.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class UserError(Exception):
    """Bad input from the person running the command: config, paths, model file."""


class ItemError(Exception):
    """One item (sitemap, page, record, image) failed; ``reason`` is the short name we store."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
