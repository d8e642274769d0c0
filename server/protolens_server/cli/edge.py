"""The server commands' edge: their failures leave as the ``protolens`` command's errors.

The client CLI prints a ``protolens.errors.ProtolensError`` as one line
(``protolens: REASON: message``) and knows nothing of the server. Every server-side
command and hook (``protolens.commands`` / ``protolens.hooks`` entry points) runs
under ``command_errors``, which re-raises the server's domain errors
(``protolens_server.errors``) as that error with the same reason, chained with ``from``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from protolens.errors import ProtolensError as CommandError

from protolens_server.errors import ProtolensError


@contextlib.contextmanager
def command_errors() -> Iterator[None]:
    """Re-raise a domain error as the CLI's one-line error (usable as a decorator)."""
    try:
        yield
    except ProtolensError as exc:
        raise CommandError(str(exc), reason=exc.reason) from exc
