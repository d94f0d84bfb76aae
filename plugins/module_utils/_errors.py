# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to the edgeai.fleet collection: not a public API, may change without notice.
"""The one error type of the model modules, with a few precise subclasses."""

from __future__ import annotations


class EdgeAIError(Exception):
    """An error to report to the user as a module failure.

    ``details`` are extra fields for ``fail_json`` (never secrets).
    """

    def __init__(self, msg, **details):
        super().__init__(msg)
        self.msg = msg
        self.details = details


class ServerError(EdgeAIError):
    """The inference server answered with an error status or could not be reached."""

    def __init__(self, msg, status=None, body=None, **details):
        super().__init__(msg, status=status, **details)
        self.status = status
        self.body = body


class WaitTimeout(EdgeAIError):
    """A condition was not met within the allowed time."""


class ArtifactError(EdgeAIError):
    """A model artifact could not be fetched, verified, unpacked or staged."""


class UnsafeArchiveError(ArtifactError):
    """An archive member would land outside the destination (absolute path, .., link)."""


class ConfigError(EdgeAIError):
    """A model configuration (config.pbtxt or its dict form) is not valid."""
