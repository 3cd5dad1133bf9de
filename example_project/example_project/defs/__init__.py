"""Definitions loaded from YAML (``dg`` components), one folder each."""
