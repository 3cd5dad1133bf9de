"""Catalog and storage outages, refused logins and ambiguous commits, told apart.

A failure that reaches us as a network, HTTP or driver error becomes a
:class:`~floe_dagster_iceberg.errors.CatalogConnectionError` naming the endpoint and what was
being done, with no secret in it.
"""

from __future__ import annotations

from floe_dagster_iceberg.errors import CatalogConnectionError, IcebergError
from floe_dagster_iceberg.redaction import redact, redact_uri

_NETWORK_MARKERS = (
    "NETWORK_CONNECTION",
    "curlCode",
    "Could not connect",
    "Couldn't connect",
    "Connection refused",
    "connection refused",
    "Connection reset",
    "timed out",
    "Temporary failure in name resolution",
    "could not connect to server",
    "server closed the connection",
    "terminating connection",
)
_ACCESS_MARKERS = (
    "ACCESS_DENIED",
    "AccessDenied",
    "INVALID_ACCESS_KEY_ID",
    "InvalidAccessKeyId",
    "SIGNATURE_DOES_NOT_MATCH",
    "SignatureDoesNotMatch",
    "password authentication failed",
)


def endpoint_of(url: str) -> str:
    """``host:port`` of a URL (the default port of its scheme when none is given).

    Example:
        >>> endpoint_of("http://127.0.0.1:8181/api/catalog")
        '127.0.0.1:8181'
    """
    from urllib.parse import urlsplit

    parts = urlsplit(url if "://" in url else f"//{url}")
    default = {"http": 80, "https": 443}.get(parts.scheme)
    try:
        port = parts.port or default
    except ValueError:
        port = default
    host = parts.hostname or "?"
    return f"{host}:{port}" if port else host


def _is_http_connection_error(error: BaseException) -> bool:
    try:
        import requests
    except ImportError:  # pragma: no cover - requests comes with pyiceberg
        return False
    return isinstance(error, requests.ConnectionError | requests.Timeout)


def _is_rest_auth_error(error: BaseException) -> bool:
    from pyiceberg.exceptions import ForbiddenError, OAuthError, UnauthorizedError

    return isinstance(error, OAuthError | UnauthorizedError | ForbiddenError)


def connection_error(
    error: BaseException,
    properties: dict[str, str],
    action: str,
    *,
    writing: bool = False,
    unknown_write_id: str | None = None,
) -> CatalogConnectionError | None:
    """A :class:`CatalogConnectionError` for an outage or a refused login, else ``None``.

    The message names the endpoint (``host:port``) that failed and carries no secret of the
    catalog ``properties``; ``action`` says what was being done ("writing table 'a.b'").
    ``writing`` adds that nothing was committed; ``unknown_write_id`` is given instead when a
    commit request was sent but its outcome could not be checked: the message then says how to
    tell whether it landed.
    """
    if isinstance(error, IcebergError | FileNotFoundError):
        return None
    detail = redact(f"{type(error).__name__}: {error}", properties)
    uri = properties.get("uri") or ""
    s3_endpoint = properties.get("s3.endpoint")
    storage = (
        f"the object store at {s3_endpoint} ({endpoint_of(s3_endpoint)})"
        if s3_endpoint
        else "the object store"
    )
    catalog = f"the Iceberg catalog at {redact_uri(uri)}" + (
        f" ({endpoint_of(uri)})" if "://" in uri and not uri.startswith("sqlite") else ""
    )
    text = str(error)
    if _is_http_connection_error(error):
        what, fix = catalog, "Check that the catalog service runs and is reachable"
    elif _is_rest_auth_error(error):
        what, fix = (
            catalog,
            "It refused the credentials: check them (e.g. the EnvVar they come from)",
        )
    elif type(error).__name__ in ("OperationalError", "InterfaceError") and any(
        marker in text for marker in _NETWORK_MARKERS + _ACCESS_MARKERS
    ):
        what, fix = catalog, "Check that the catalog database runs and accepts the credentials"
    elif isinstance(error, OSError) and any(marker in text for marker in _ACCESS_MARKERS):
        what, fix = storage, "It refused the credentials: check the access key and secret"
    elif isinstance(error, ConnectionError) or (
        isinstance(error, OSError) and any(marker in text for marker in _NETWORK_MARKERS)
    ):
        what, fix = storage, "Check that the object store runs and is reachable"
    else:
        return None
    if unknown_write_id is not None:
        fix += (
            "; a commit was sent and its outcome is unknown: it landed if the table has a "
            f"snapshot whose summary holds floe.write-id={unknown_write_id}"
        )
    elif writing:
        fix += "; nothing was committed"
    return CatalogConnectionError(
        f"Could not reach {what} while {action}: {detail}. {fix}. Re-run once it is back (a "
        "Dagster RetryPolicy on the asset does so automatically)."
    )


def may_have_reached_server(error: BaseException) -> bool:
    """Whether a failed HTTP request may still have been processed (not a refused connection)."""
    if not _is_http_connection_error(error):
        return False
    text = str(error)
    return not ("NewConnectionError" in text or "Connection refused" in text)
