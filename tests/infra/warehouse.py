"""List the files that really exist under a table location, on local disk or on S3.

Maintenance tests compare these listings before and after expiring snapshots, compacting or
removing orphans. Paths are returned as full URIs in the form Iceberg metadata uses them
(``file:///...`` or ``s3://bucket/key``; a location without a scheme gives plain paths), so
they can be compared directly with ``table.inspect.all_files()["file_path"]``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlparse

S3_SCHEMES = ("s3", "s3a", "s3n")


def list_local_files(location: str) -> dict[str, int]:
    """``{path: size}`` of every regular file under a ``file://`` URI or plain path."""
    parsed = urlparse(location)
    if parsed.scheme == "file":
        root = unquote(parsed.path)
        prefix = "file://"
    elif parsed.scheme == "":
        root = location
        prefix = ""
    else:
        raise ValueError(f"not a local location: {location!r}")
    found: dict[str, int] = {}
    for directory, _subdirs, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            found[prefix + path] = os.path.getsize(path)
    return found


def s3_filesystem_from_properties(properties: Mapping[str, str]):
    """A ``pyarrow.fs.S3FileSystem`` built from PyIceberg ``s3.*`` properties."""
    from pyarrow import fs

    options: dict[str, Any] = {"connect_timeout": 5, "request_timeout": 30}
    if "s3.endpoint" in properties:
        options["endpoint_override"] = properties["s3.endpoint"]
    if "s3.access-key-id" in properties:
        options["access_key"] = properties["s3.access-key-id"]
        options["secret_key"] = properties["s3.secret-access-key"]
    if "s3.session-token" in properties:
        options["session_token"] = properties["s3.session-token"]
    if "s3.region" in properties:
        options["region"] = properties["s3.region"]
    return fs.S3FileSystem(**options)


def list_s3_objects(filesystem, prefix: str, scheme: str = "s3") -> dict[str, int]:
    """``{scheme://bucket/key: size}`` of the objects under ``prefix`` (``[s3://]bucket/key``)."""
    from pyarrow import fs

    parsed = urlparse(prefix)
    if parsed.scheme in S3_SCHEMES:
        scheme = parsed.scheme
        path = f"{parsed.netloc}{parsed.path}"
    else:
        path = prefix
    path = path.strip("/")
    if not path:
        buckets = filesystem.get_file_info(fs.FileSelector("", recursive=False))
        found: dict[str, int] = {}
        for bucket in buckets:
            found.update(list_s3_objects(filesystem, bucket.path, scheme))
        return found
    selector = fs.FileSelector(path, recursive=True, allow_not_found=True)
    return {
        f"{scheme}://{info.path}": info.size
        for info in filesystem.get_file_info(selector)
        if info.type == fs.FileType.File
    }


def list_warehouse_files(
    location: str, properties: Mapping[str, str] | None = None
) -> dict[str, int]:
    """``{uri: size}`` of the files under ``location`` (a table or warehouse location).

    ``properties`` are PyIceberg catalog or FileIO properties; for S3 locations they supply the
    endpoint and credentials (``s3.endpoint``, ``s3.access-key-id``, ...).
    """
    scheme = urlparse(location).scheme
    if scheme in ("", "file"):
        return list_local_files(location)
    if scheme in S3_SCHEMES:
        return list_s3_objects(s3_filesystem_from_properties(properties or {}), location)
    raise ValueError(f"unsupported warehouse location scheme {scheme!r}: {location!r}")


def table_files(table) -> dict[str, int]:
    """``{uri: size}`` of every file under a PyIceberg table's location (data and metadata)."""
    return list_warehouse_files(table.location(), table.io.properties)
