"""Sankofa's exception tree. Errors become HTTP only at the edge (``api.problems``).

::

    SankofaError                      runtime failures a client can be told about
    +-- RequestError                  the client's input is wrong (4xx)
    |   +-- MalformedBodyError        400 not JSON / not decodable
    |   +-- BodyTooLargeError         413
    |   +-- RequestTimeoutError       408 the body did not arrive in time
    |   +-- HeadersTooLargeError      431
    |   +-- UnsupportedMediaTypeError 415
    |   |   +-- UnsupportedContentEncodingError  415 not gzip or identity
    |   +-- InvalidFieldError         422 one or more fields break a rule
    |   |   +-- RuleExpressionError   422 a rule's expression: where and why
    |   +-- ConflictError             409 same transaction id, other content
    |   +-- RuleConflictError         409 a rule id taken, or changed meanwhile
    |   +-- PreconditionFailedError   412 If-Match names another version
    |   +-- UnstorableValueError      422 passed validation, refused by the database
    |   +-- NotFoundError             404
    |   +-- AuthError                 the caller is not let in
    |   |   +-- UnauthorizedError     401 no, bad or expired token (WWW-Authenticate)
    |   |   +-- ForbiddenError        403 a valid token without the role
    |   |   +-- TokenRequestError     400/401 /v1/oauth/token refused (RFC 6749 error)
    |   +-- RateLimitedError          429 the client is over its rate (Retry-After)
    +-- UnavailableError              503, always with Retry-After
    |   +-- OverloadedError           admission control refused the request
    |   +-- DrainingError             shutting down, intake stopped
    |   +-- StorageUnavailableError   PostgreSQL unreachable or too slow
    |   |   +-- OutcomeUnknownError   the write was sent, its commit never confirmed
    |   +-- FeatureStoreUnavailableError  Redis unreachable or too slow
    +-- DeadlineExceededError         504: the deadline passed before scoring

Programming errors (misuse of an API) are plain ``TypeError`` / ``ValueError``
raised at once and never reach a client as anything but a 500.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sankofa.privacy.cards import mask_pans


class SankofaError(Exception):
    """Base of every runtime failure Sankofa reports to a client."""

    status = 500
    type_slug = "internal"
    title = "Internal error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class RequestError(SankofaError):
    status = 400
    type_slug = "bad-request"
    title = "Bad request"


class MalformedBodyError(RequestError):
    status = 400
    type_slug = "malformed-body"
    title = "Malformed request body"


class BodyTooLargeError(RequestError):
    status = 413
    type_slug = "body-too-large"
    title = "Request body too large"


class RequestTimeoutError(RequestError):
    status = 408
    type_slug = "request-timeout"
    title = "Request body not received in time"


class HeadersTooLargeError(RequestError):
    status = 431
    type_slug = "headers-too-large"
    title = "Request header fields too large"


class UnsupportedMediaTypeError(RequestError):
    status = 415
    type_slug = "unsupported-media-type"
    title = "Unsupported media type"


class UnsupportedContentEncodingError(UnsupportedMediaTypeError):
    type_slug = "unsupported-content-encoding"
    title = "Unsupported content encoding"


@dataclass(frozen=True, slots=True)
class FieldIssue:
    """One broken rule: where (a JSON-pointer-like path) and why."""

    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        # A field name comes from the client (an unknown key): keep it printable.
        return {"field": _printable(self.field), "message": _printable(self.message)}


def _printable(text: str) -> str:
    # A client's field name (an unknown key) is quoted back: never a card number.
    text = mask_pans(text)
    if text.isprintable():
        return text
    return text.encode("unicode_escape").decode("ascii")


class InvalidFieldError(RequestError):
    status = 422
    type_slug = "invalid-field"
    title = "Invalid field"

    def __init__(self, issues: Sequence[FieldIssue]) -> None:
        if not issues:
            raise ValueError("issues must not be empty")
        self.issues = list(issues)
        first = self.issues[0]
        more = f" (and {len(self.issues) - 1} more)" if len(self.issues) > 1 else ""
        super().__init__(f"{mask_pans(first.field)}: {first.message}{more}")


class RuleExpressionError(InvalidFieldError):
    """A rule's expression does not parse, names an unknown field or mixes types;
    ``position`` (0-based offset into the text) and ``name`` point at the problem."""

    def __init__(self, field: str, message: str, *, position: int, name: str | None) -> None:
        super().__init__([FieldIssue(field, f"{message} (at position {position})")])
        self.problem_extra: dict[str, object] = {
            "expression_error": {
                "message": message,
                "position": position,
                **({"name": name} if name is not None else {}),
            }
        }


class ConflictError(RequestError):
    status = 409
    type_slug = "transaction-id-conflict"
    title = "Transaction id already used with other content"

    def __init__(self, detail: str, *, indexes: Sequence[int] = ()) -> None:
        super().__init__(detail)
        self.indexes = list(indexes)


class RuleConflictError(RequestError):
    status = 409
    type_slug = "rule-conflict"
    title = "Rule conflict"


class PreconditionFailedError(RequestError):
    """``If-Match`` named a version that is no longer the latest (RFC 9110 13.1.1)."""

    status = 412
    type_slug = "precondition-failed"
    title = "Precondition failed"


class UnstorableValueError(RequestError):
    """A value the validation let through but the database refused (a safety net:
    the validation rules are meant to catch everything first)."""

    status = 422
    type_slug = "unstorable-value"
    title = "Value cannot be stored"


class NotFoundError(RequestError):
    status = 404
    type_slug = "not-found"
    title = "Not found"


class AuthError(RequestError):
    status = 401
    type_slug = "unauthorized"
    title = "Authentication required"


class UnauthorizedError(AuthError):
    """No usable bearer token. ``error`` is RFC 6750's code for WWW-Authenticate."""

    def __init__(self, detail: str, *, error: str | None = "invalid_token") -> None:
        super().__init__(detail)
        self.error = error


class ForbiddenError(AuthError):
    status = 403
    type_slug = "forbidden"
    title = "Forbidden: the token lacks the role"


class TokenRequestError(AuthError):
    """A token request refused; ``error`` is RFC 6749 5.2's code, sent beside the
    problem's members so that OAuth client libraries understand it."""

    status = 400
    type_slug = "invalid-token-request"
    title = "Token request refused"

    def __init__(self, detail: str, *, error: str, status: int = 400) -> None:
        super().__init__(detail)
        self.error = error
        self.status = status


class RateLimitedError(RequestError):
    status = 429
    type_slug = "rate-limited"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(detail)
        self.retry_after_s = max(1.0, retry_after_s)


class UnavailableError(SankofaError):
    status = 503
    type_slug = "unavailable"
    title = "Service unavailable"

    def __init__(self, detail: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(detail)
        self.retry_after_s = max(1.0, retry_after_s)


class OverloadedError(UnavailableError):
    type_slug = "overloaded"
    title = "Overloaded: request shed"


class DrainingError(UnavailableError):
    type_slug = "draining"
    title = "Shutting down: not accepting work"


class StorageUnavailableError(UnavailableError):
    type_slug = "storage-unavailable"
    title = "Storage unavailable"


class OutcomeUnknownError(StorageUnavailableError):
    """The write was sent but never confirmed (the connection broke, or the deadline
    passed, mid-COPY): it may have committed. Not an acknowledgement; sending the same
    request again is safe and answers the stored decision if there is one."""

    type_slug = "outcome-unknown"
    title = "Storage did not confirm the write"


class FeatureStoreUnavailableError(UnavailableError):
    type_slug = "feature-store-unavailable"
    title = "Feature store unavailable"


class DeadlineExceededError(SankofaError):
    status = 504
    type_slug = "deadline-exceeded"
    title = "Deadline passed before scoring"

    def __init__(self, detail: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(detail)
        self.retry_after_s = max(1.0, retry_after_s)
