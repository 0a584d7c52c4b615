"""Prometheus exporter for JK (JiKong) battery management systems."""

__version__ = "0.1.0"
