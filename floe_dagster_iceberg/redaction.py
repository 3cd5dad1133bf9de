"""Redaction of credentials: the one place that decides what is a secret and hides it.

Every surface that can show configuration or an error goes through :func:`redact`: the
``repr`` of configs and resources, error messages, the package's log records, OpenLineage
facets and OpenTelemetry span events. It hides

- the password of a URI's user info (``scheme://user:password@host``),
- URI query parameters and ``name=value`` pairs whose name looks like a credential
  (``?password=...``, ``&sig=...``, ``X-Amz-Signature=...``, ``AccountKey=...;``),
- the values of every catalog property whose name looks like a credential (see
  :func:`is_secret_name`), wherever they appear in the text.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import unquote

__all__ = [
    "MASK",
    "RedactedRepr",
    "install_log_redaction",
    "is_secret_name",
    "redact",
    "redact_properties",
    "redact_uri",
    "redact_value",
]

MASK = "***"

# A name holding one of these anywhere is a secret (``s3.secret-access-key``, ``sslpassword``,
# ``adls.sas-token``, ``gcs.oauth2.token``, ``client_secret``, ``X-Amz-Credential``).
_SECRET_SUBSTRINGS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "credential",
    "signature",
    "apikey",
    "api-key",
    "api_key",
    "privatekey",
    "private-key",
    "private_key",
    "connection-string",
    "connection_string",
    "connectionstring",
    "authorization",
    "cookie",
    "jaas",
)
# A name with one of these as a whole word is a secret (``adls.account-key``, ``AccountKey``,
# ``s3.access-key-id``, ``sig``, ``pwd``); ``keytab`` or ``keys`` are not.
_SECRET_WORDS = frozenset({"key", "pwd", "pass", "sig", "sas", "auth"})
# Names that contain a marker but carry no secret.
_NOT_SECRET = frozenset({"token-type", "token_type", "auth.type", "sasl.mechanism"})
# ``key`` next to one of these names a lookup key, not a secret (``partition_key``, ``run_key``).
_LOOKUP_KEY_WORDS = frozenset(
    {"partition", "asset", "run", "manager", "resource", "idempotency", "primary", "sort", "join"}
)

# ``scheme://user:password@``; also a mistyped ``scheme:/user:password@``.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*:/+)(?P<userinfo>[^\s/?#@'\"<>]*)@")
_PAIR = re.compile(
    r"(?P<name>(?<![\w.\-])[A-Za-z_][\w.\-]*)(?P<eq>\s*=\s*)(?P<value>\"[^\"]*\"|'[^']*'|[^&;#\s'\",)]+)"
)
_MIN_SECRET_LENGTH = 4


def is_secret_name(name: str) -> bool:
    """Whether a property, parameter or field called ``name`` holds a credential.

    Example:
        >>> [is_secret_name(n) for n in ("adls.account-key", "s3.session-token", "sig")]
        [True, True, True]
        >>> [is_secret_name(n) for n in ("warehouse", "host", "keytab", "partition_key")]
        [False, False, False, False]
    """
    lowered = name.lower()
    if lowered in _NOT_SECRET:
        return False
    if any(marker in lowered for marker in _SECRET_SUBSTRINGS):
        return True
    words = set(re.findall(r"[a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name).lower()))
    if words & _LOOKUP_KEY_WORDS:
        words.discard("key")
    return bool(words & _SECRET_WORDS)


def _split_query(uri: str) -> tuple[str, str, str]:
    """``(before '?', query, '#fragment')`` of a URI."""
    rest, hash_sign, fragment = uri.partition("#")
    base, _, query = rest.partition("?")
    return base, query, f"{hash_sign}{fragment}"


def redact_uri(uri: str, *, drop: bool = False) -> str:
    """``uri`` with its password and credential-like query parameters hidden.

    ``drop=True`` removes them (and the whole user info) instead of masking them: for a URI
    used as an identity, such as a lineage namespace.

    Example:
        >>> redact_uri("postgresql://app:s3cret@db:5432/iceberg?sslmode=require&password=x")
        'postgresql://app:***@db:5432/iceberg?sslmode=require&password=***'
        >>> redact_uri("postgresql://app:s3cret@db:5432/iceberg?password=x&host=h", drop=True)
        'postgresql://db:5432/iceberg?host=h'
    """
    if not drop:
        return redact(uri)
    base, query, fragment = _split_query(uri)
    scheme, sep, rest = base.partition("://")
    if sep:
        authority, slash, path = rest.partition("/")
        base = f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"
    kept = [part for part in query.split("&") if part and not is_secret_name(part.split("=")[0])]
    return base + (f"?{'&'.join(kept)}" if kept else "") + fragment


def _mask_userinfo(match: re.Match[str]) -> str:
    userinfo = match.group("userinfo")
    user, colon, _password = userinfo.partition(":")
    if colon:
        return f"{match.group('scheme')}{user}:{MASK}@"
    return match.group(0)


def _mask_pair(match: re.Match[str]) -> str:
    if not is_secret_name(match.group("name")):
        return match.group(0)
    return f"{match.group('name')}{match.group('eq')}{MASK}"


def _secrets_of(properties: Mapping[str, Any]) -> set[str]:
    """Every secret value the catalog ``properties`` hold, as it may appear in a message."""
    secrets: set[str] = set()
    for key, value in properties.items():
        if not isinstance(value, str) or not value:
            continue
        if is_secret_name(key):
            secrets.add(value)
            if ":" in value:  # an OAuth2 client credential 'id:secret': the secret on its own
                secrets.add(value.split(":", 1)[1])
        if "://" in value or "=" in value:
            secrets.update(_secrets_in_uri(value))
    return {
        secret
        for secret in secrets
        if len(secret) >= _MIN_SECRET_LENGTH
        and secret.lower() not in ("true", "false", "none", "null")
        and not secret.isdigit()
    }


def _secrets_in_uri(uri: str) -> Iterator[str]:
    match = _USERINFO.search(uri)
    if match and ":" in match.group("userinfo"):
        password = match.group("userinfo").split(":", 1)[1]
        yield password
        yield unquote(password)
    for pair in _PAIR.finditer(uri):
        if is_secret_name(pair.group("name")):
            value = pair.group("value").strip("'\"")
            yield value
            yield unquote(value)


def redact(text: str, properties: Mapping[str, Any] | None = None) -> str:
    """``text`` with every credential replaced by ``***``.

    Hidden: the values of the secret ``properties`` (the catalog's, when known) wherever they
    appear, URI passwords, and ``name=value`` pairs (query parameters, connection strings)
    whose name looks like a credential.

    Example:
        >>> redact("login k:s3cret failed", {"credential": "k:s3cret"})
        'login *** failed'
        >>> redact("postgresql://app@db/iceberg?user=app&password=hunter2 refused")
        'postgresql://app@db/iceberg?user=app&password=*** refused'
    """
    if properties:
        for secret in sorted(_secrets_of(properties), key=len, reverse=True):
            text = text.replace(secret, MASK)
    text = _USERINFO.sub(_mask_userinfo, text)
    return _PAIR.sub(_mask_pair, text)


def redact_value(name: str, value: Any) -> Any:
    """``value`` of a field or property called ``name``, fit to show.

    A secret name hides the whole value; strings are redacted; mappings and lists are walked.

    Example:
        >>> redact_value("transport", {"type": "http", "auth": {"apiKey": "k-123"}})
        {'type': 'http', 'auth': '***'}
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    if is_secret_name(name):
        return MASK
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return redact_properties(value)
    if isinstance(value, list | tuple):
        return type(value)(redact_value(name, item) for item in value)
    return value


def redact_properties(properties: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``properties`` fit to show: secret values masked, URIs redacted.

    Example:
        >>> redact_properties({"uri": "postgresql://u:pw@db/x", "adls.account-key": "abc"})
        {'uri': 'postgresql://u:***@db/x', 'adls.account-key': '***'}
    """
    return {key: redact_value(str(key), value) for key, value in properties.items()}


class RedactedRepr:
    """Mix into a pydantic model (a Dagster config or resource) so ``repr``/``str`` hide secrets.

    Fields marked ``repr=False`` stay hidden; every other value goes through
    :func:`redact_value`, also after Dagster has resolved an ``EnvVar`` into the field.
    """

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():  # type: ignore[misc]
            yield name, value if name is None else redact_value(name, value)


class _RedactingFilter(logging.Filter):
    """Redacts the message (and the formatted exception) of every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the handler's business
            return True
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


_LOGGERS = (
    "floe_dagster_iceberg",
    "floe_dagster_iceberg.lineage",
    "floe_dagster_iceberg.engine.maintenance",
)
_FILTER = _RedactingFilter()


def install_log_redaction(names: Iterable[str] = _LOGGERS) -> None:
    """Redact every record logged by the package's loggers (idempotent)."""
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


install_log_redaction()
