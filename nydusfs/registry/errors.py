"""Errors of the registry backend: one line each, naming the registry, repository and object."""

from __future__ import annotations

from nydusfs.errors import NydusfsError


class RegistryError(NydusfsError):
    """The registry refused, failed or could not be reached (after retries, where they apply)."""


class UploadSessionLost(RegistryError):
    """The registry no longer knows an upload session (its answer to a chunk was lost and the
    session cannot be resumed): the upload must start again."""


class ReferenceError_(RegistryError):
    """A `docker://` reference that does not parse."""
