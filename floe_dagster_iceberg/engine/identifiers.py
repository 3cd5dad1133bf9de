"""Validation of namespace and table names, so no name can escape the warehouse directory or
exceed what a file system allows for a directory name."""

from __future__ import annotations

import unicodedata

from floe_dagster_iceberg.errors import InvalidIdentifierError

__all__ = [
    "MAX_NAME_BYTES",
    "table_identifier",
    "validate_identifier_part",
]

_FORBIDDEN_CHARACTERS = frozenset("/\\")

MAX_NAME_BYTES = 240
"""Longest namespace (all levels with their dots) or table name, in bytes of UTF-8.

Each becomes one directory name in the warehouse, which file systems limit to 255 bytes, and
catalogs may add a suffix (``.db``); SQL catalogs store each in a 255-character column.
"""


def validate_identifier_part(part: str, *, what: str = "name") -> str:
    """Return ``part`` unchanged if it is a safe namespace or table name, else raise.

    Refused: empty names, ``..``, path separators, control characters and names longer than
    :data:`MAX_NAME_BYTES` bytes in UTF-8.

    Example:
        >>> validate_identifier_part("orders")
        'orders'
    """
    if not isinstance(part, str) or not part.strip():
        raise InvalidIdentifierError(f"The {what} {part!r} is empty; give a non-empty name.")
    if part in (".", "..") or ".." in part:
        raise InvalidIdentifierError(
            f"The {what} {part!r} contains '..' (path traversal); use letters, digits and '_'."
        )
    bad = sorted({ch for ch in part if ch in _FORBIDDEN_CHARACTERS})
    if bad:
        raise InvalidIdentifierError(
            f"The {what} {part!r} contains the path separator(s) {bad}; use letters, digits and '_'."
        )
    controls = sorted({repr(ch) for ch in part if unicodedata.category(ch).startswith("C")})
    if controls:
        raise InvalidIdentifierError(
            f"The {what} {part!r} contains control characters {controls}; remove them."
        )
    size = len(part.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise InvalidIdentifierError(
            f"The {what} {part!r} is {size} bytes long in UTF-8; the limit is {MAX_NAME_BYTES} "
            "bytes, because it becomes a directory name in the warehouse (255 bytes at most on "
            "common file systems). Give a shorter name: for an asset, the table name is the last "
            "part of its asset key and the namespace its key prefix or 'namespace' metadata."
        )
    return part


def table_identifier(namespace: str, name: str) -> tuple[str, str]:
    """Validate both parts and return the ``(namespace, table)`` identifier.

    A dotted namespace (``lake.raw``) is a nested namespace: each level is validated.

    Example:
        >>> table_identifier("sales", "orders")
        ('sales', 'orders')
    """
    validate_identifier_part(namespace, what="namespace")
    for level in namespace.split("."):
        validate_identifier_part(level, what="namespace level")
    validate_identifier_part(name, what="table name")
    return (namespace, name)
