"""Resource names of the protolens API (AIP-122), built and read in this one place.

    jobs/{job}                       JOBS
    jobs/{job}/prototypes/{index}    prototype_name(), prototype_of()
    models/{model}                   MODELS
    checks/{check}                   CHECKS
    apiKeys/{key_id}                 API_KEYS

Both sides use it: the SDK to take an id or a whole name from its caller, the API
(``protolens_server``) to read the name in a request and to name what it returns. A
name that does not fit raises ``ResourceNameError`` (a ``ValueError`` whose message says
the expected form); the API answers it as INVALID_ARGUMENT naming the field. Plain
Python: no grpc, no protobuf.
"""

from __future__ import annotations

from dataclasses import dataclass


class ResourceNameError(ValueError):
    """A resource name that does not fit its pattern."""

    def __init__(self, pattern: str, given: str) -> None:
        super().__init__(f"expected '{pattern}', got {given!r}")
        self.pattern = pattern
        self.given = given


@dataclass(frozen=True)
class Collection:
    """One kind of resource, named ``{prefix}/{id}``.

    ``slashes``: whether an id may hold ``/`` (a model reference may be a registry URI
    such as ``models:/NAME/VERSION``); job, check and key ids are one path segment.
    """

    prefix: str
    variable: str
    slashes: bool = False

    @property
    def pattern(self) -> str:
        return f"{self.prefix}/{{{self.variable}}}"

    def name(self, id_or_name: str) -> str:
        """The resource name of an id; a whole name is returned as it is."""
        head = f"{self.prefix}/"
        return id_or_name if id_or_name.startswith(head) else head + id_or_name

    def id(self, name: str) -> str:
        """The id in ``name`` (a bare id is returned as it is), unchecked: for names the
        service gave, and labels."""
        return name.removeprefix(f"{self.prefix}/")

    def parse(self, name: str) -> str:
        """The id in a name a caller gave (a bare id is taken too); ``ResourceNameError``
        if it is empty or, unless ``slashes``, holds a ``/``."""
        id_ = self.id(name)
        if not id_ or (not self.slashes and "/" in id_):
            raise ResourceNameError(self.pattern, name)
        return id_


JOBS = Collection("jobs", "job")
MODELS = Collection("models", "model", slashes=True)
CHECKS = Collection("checks", "check")
API_KEYS = Collection("apiKeys", "key_id")

_PROTOTYPES = "prototypes"
PROTOTYPE_PATTERN = f"{JOBS.pattern}/{_PROTOTYPES}/{{index}}"


def prototype_name(job: str, index: int) -> str:
    """``jobs/{job}/prototypes/{index}`` of a job id or name and a prototype's index."""
    return f"{JOBS.name(job)}/{_PROTOTYPES}/{int(index)}"


def prototype_of(name: str) -> tuple[str, int]:
    """The job id and index in ``jobs/{job}/prototypes/{index}`` (``ResourceNameError``
    for anything else)."""
    parts = name.split("/")
    if (
        len(parts) != 4
        or parts[0] != JOBS.prefix
        or not parts[1]
        or parts[2] != _PROTOTYPES
        or not (parts[3].isascii() and parts[3].isdigit())
    ):
        raise ResourceNameError(PROTOTYPE_PATTERN, name)
    return parts[1], int(parts[3])
