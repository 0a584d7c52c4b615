"""Simulated boards and their scenarios, served by --simulate and ble+sim://."""
