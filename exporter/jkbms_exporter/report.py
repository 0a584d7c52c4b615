"""Human-readable tables of a reading (``read`` and ``decode`` commands)."""

from __future__ import annotations

from typing import List, Optional

from .reading import COULOMBS_PER_AMPERE_HOUR, READING_AGE_KEY, Reading, cell_label

_UNIT_SYMBOL = {"volts": "V", "amperes": "A", "celsius": "°C", "seconds": "s", "ratio": "%"}


def _ah(coulombs: Optional[float]) -> str:
    return "-" if coulombs is None else "%g Ah" % round(coulombs / COULOMBS_PER_AMPERE_HOUR, 3)


def _direction(current: float) -> str:
    if current > 0:
        return "charging"
    if current < 0:
        return "discharging"
    return "idle"


def _on(flag: bool) -> str:
    return "on" if flag else "OFF"


def render_reading(reading: Reading, port: str = "", frame: bytes = b"") -> str:
    lines: List[str] = []

    def row(label: str, text: str) -> None:
        lines.append("%-16s %s" % (label, text))

    device = reading.device
    if port:
        row("Port", port)
    row(
        "Device",
        ", ".join(
            "%s %s" % (key, value)
            for key, value in (
                ("model", device.model),
                ("hardware", device.hardware_version),
                ("software", device.software_version),
                ("id", device.device_id),
                ("made", device.manufacture_date),
                ("battery", device.battery_type),
                ("serial", device.serial_number),
            )
            if value
        )
        + " (protocol %s%s)" % (device.protocol,
                                " v" + device.protocol_version if device.protocol_version else ""),
    )
    row("Pack voltage", "%.2f V" % reading.pack_voltage_volts)
    row("Current", "%+.2f A (%s), power %+.0f W" % (
        reading.current_amperes, _direction(reading.current_amperes), reading.power_watts))
    row("State of charge", "%.0f %%" % (reading.state_of_charge_ratio * 100))
    row("Capacity", "nominal %s, actual %s, %d cycles, throughput %s" % (
        _ah(reading.nominal_capacity_coulombs), _ah(reading.actual_capacity_coulombs),
        reading.charge_cycles, _ah(reading.cycle_capacity_coulombs)))
    row("Temperatures", ", ".join(
        "%s %.0f °C" % (sensor, celsius) for sensor, celsius in reading.temperatures_celsius.items()))
    row("MOSFETs", "charge %s, discharge %s, balancing %s" % (
        _on(reading.charge_mosfet_on), _on(reading.discharge_mosfet_on),
        "yes" if reading.balancing else "no"))
    if reading.switches_enabled:
        row("Switches", ", ".join(
            "%s %s" % (name, "enabled" if on else "DISABLED")
            for name, on in reading.switches_enabled.items()))
    active = reading.active_alarms()
    row("Alarms", ("ACTIVE: " + ", ".join(a.replace("_", " ") for a in active)) if active else "none")
    if reading.runtime_seconds is not None:
        row("Working time", "%.1f days" % (reading.runtime_seconds / 86400))
    if reading.state_of_health_ratio is not None:
        row("Health", "%.0f %%" % (reading.state_of_health_ratio * 100))
    if reading.remaining_capacity_coulombs is not None:
        row("Remaining", _ah(reading.remaining_capacity_coulombs))
    if reading.balance_current_amperes is not None:
        row("Balance current", "%+.3f A" % reading.balance_current_amperes)
    age = reading.extra.get(READING_AGE_KEY)
    if age is not None:
        row("Values", "%.1f s old (%s)" % (float(age), reading.extra.get("source", "stream")))  # type: ignore[arg-type]

    cells = reading.cell_voltages_volts
    if cells:
        low, high = min(cells), max(cells)
        row("Cells", "%d, min %.3f V, max %.3f V, delta %.0f mV, mean %.3f V%s" % (
            len(cells), low, high, (high - low) * 1000, sum(cells) / len(cells),
            "; balance-wire resistance in ohms" if reading.cell_resistances_ohms else ""))
        resistances = reading.cell_resistances_ohms or ()
        for index, volts in enumerate(cells, start=1):
            mark = ""
            if high != low and volts == high:
                mark = "  <- max"
            elif high != low and volts == low:
                mark = "  <- min"
            ohms = ("  wire %.3f Ω" % resistances[index - 1]) if index <= len(resistances) else ""
            lines.append("  cell %s  %.3f V%s%s" % (cell_label(index), volts, ohms, mark))

    if reading.settings:
        lines.append("Settings")
        for setting in reading.settings:
            value = setting.value * 100 if setting.unit == "ratio" else setting.value
            lines.append("  %-42s %g %s" % (setting.name, round(value, 3), _UNIT_SYMBOL[setting.unit]))
    if frame:
        lines.append("Frame (%d bytes)" % len(frame))
        hexed = frame.hex(" ")
        width = 48  # 16 bytes a line
        lines.extend("  " + hexed[i : i + width].strip() for i in range(0, len(hexed), width))
    return "\n".join(lines) + "\n"
