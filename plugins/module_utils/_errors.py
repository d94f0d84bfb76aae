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


class HTTPError(EdgeAIError):
    """An HTTP exchange failed: the peer could not be reached, or answered with a status the
    caller does not accept. ``status`` is None when no answer came; ``url`` is redacted (no
    credentials, no signatures); ``body`` is the answer's body, never put in ``details``.
    Raised by plugins/module_utils/_http.py, whose messages name no credential."""

    def __init__(self, msg, status=None, url=None, body=None, **details):
        if status is not None:
            details["status"] = status
        super().__init__(msg, **details)
        self.status = status
        self.url = url
        self.body = body


class CredentialError(HTTPError):
    """Credentials were not sent: plain http to another machine, a redirect to another
    host or scheme, a token realm outside the registry's host. Nothing was sent."""


class ServerError(HTTPError):
    """The inference server answered with an error status or could not be reached."""

    def __init__(self, msg, status=None, body=None, **details):
        super().__init__(msg, status=status, body=body, **details)
        self.details["status"] = status  # always reported, as before


class WebhookError(HTTPError):
    """The event API could not be reached, or answered in a way the caller cannot use."""


class WaitTimeout(EdgeAIError):
    """A condition was not met within the allowed time."""


class ArtifactError(EdgeAIError):
    """A model artifact could not be fetched, verified, unpacked or staged."""


class ArtifactFetchError(ArtifactError, HTTPError):
    """A download or a registry request for a model artifact failed."""


class UnsafeArchiveError(ArtifactError):
    """An archive member would land outside the destination (absolute path, .., link)."""


class ConfigError(EdgeAIError):
    """A model configuration (config.pbtxt or its dict form) is not valid."""
