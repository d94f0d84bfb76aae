"""Errors that map to an HTTP status."""

from __future__ import annotations


class ServerError(Exception):
    """An error reported to the client as ``{"error": message}`` with ``status``."""

    status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class BadRequest(ServerError):
    status = 400


class Unauthorized(ServerError):
    status = 401


class NotFound(ServerError):
    status = 404


class TooLarge(ServerError):
    status = 413


class NotReady(ServerError):
    status = 503


class LoadError(ServerError):
    """A model (version) could not be loaded; the previous state keeps serving."""

    status = 400
