"""Compatibility alias: temperature scaling moved to :mod:`bayesmeta.calibration.temperature`."""

from bayesmeta.calibration.temperature import TemperatureScaling, fit_temperature

__all__ = ["TemperatureScaling", "fit_temperature"]
