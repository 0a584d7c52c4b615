"""Ports and buses: the serial/TCP link, the JK-PB bus schedule and the BLE link."""
