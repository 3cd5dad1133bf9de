"""Real components for tests: free ports, PostgreSQL (pgserver), SeaweedFS (S3 + Iceberg REST).

Import as ``infra`` (``tests/`` is on ``sys.path`` via ``tests/conftest.py``), e.g.
``from infra import SeaweedFS, list_warehouse_files``.
"""

from .catalogs import CATALOG_KINDS, CATALOG_NAME, catalog_kind_of, load_test_catalog, unique_name
from .ports import free_port, free_ports, poll_until, port_open
from .postgres import PostgresServer, PostgresStartError
from .seaweedfs import SeaweedFS, SeaweedFSStartError, find_weed_binary
from .warehouse import list_s3_objects, list_warehouse_files, table_files

__all__ = [
    "CATALOG_KINDS",
    "CATALOG_NAME",
    "PostgresServer",
    "PostgresStartError",
    "SeaweedFS",
    "SeaweedFSStartError",
    "catalog_kind_of",
    "find_weed_binary",
    "free_port",
    "free_ports",
    "list_s3_objects",
    "list_warehouse_files",
    "load_test_catalog",
    "poll_until",
    "port_open",
    "table_files",
    "unique_name",
]
