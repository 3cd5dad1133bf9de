"""The engine: Iceberg tables without Dagster.

Nothing under this package imports ``dagster``; the Dagster face of the package calls into it.
Only :mod:`floe_dagster_iceberg.engine._pyiceberg` touches PyIceberg's private names.
"""
