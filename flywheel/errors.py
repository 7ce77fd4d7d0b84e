"""Exceptions that mean "the user asked for something we cannot do" (not bugs).

The CLI and API turn these into one clear line / a 4xx answer; anything else is a bug.
"""


class FlywheelError(Exception):
    """Base class for expected, user-facing errors."""


class NotFoundError(FlywheelError):
    """An id, version or file that does not exist."""


class InvalidInputError(FlywheelError):
    """Input that cannot be accepted (bad image, bad manifest, bad option)."""


class IntegrityError(FlywheelError):
    """Stored data that fails its checksum: refuse it rather than use it."""


class ForbiddenError(FlywheelError):
    """The caller may not touch this record (another tenant's, or a role that lacks it)."""


class ConflictError(FlywheelError):
    """The request clashes with work in progress (a cycle running, a request in flight)."""


class UnsupportedMediaError(InvalidInputError):
    """Bytes that are not an image of an allowed format at all (not merely corrupt)."""


class BusyError(FlywheelError):
    """Capacity for this kind of work is used up for now: retry later (nothing was done)."""
