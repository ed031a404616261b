"""GPU health through NVML (``nvidia-ml-py``): temperature, utilisation, ECC, XID events,
SM clocks and the reasons NVML gives for holding them down.

Where there is no NVML library, driver or GPU, the probe says so once (a log line and
``gpu_probe`` in the report) and stays quiet. Reading NVML is ``NvmlProbe.read``; turning
a raw reading into a report entry is the pure ``gpu_status``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from values.reports import GpuStatus

log = logging.getLogger(__name__)


def gpu_status(raw: Mapping[str, Any], prev: Mapping[str, Any] | None) -> GpuStatus:
    """One GPU's report entry from a raw reading (and the previous one, for ECC deltas).

    ``raw``: ``index``, ``temperature_c``, ``utilization_gpu``, ``ecc_volatile_uncorrected``,
    ``ecc_volatile_corrected`` (None where the GPU has no ECC), ``xids`` (events since the
    last reading), ``sm_clock_mhz``, ``max_sm_clock_mhz``, ``clock_event_mask`` (NVML's
    bit mask of clock-event reasons; None where unsupported).
    """

    def grown(key: str) -> int:
        now = raw.get(key)
        before = (prev or {}).get(key)
        if now is None or before is None:
            return 0
        return int(now - before) if now >= before else int(now)

    return GpuStatus(
        index=int(raw["index"]),
        temperature=raw.get("temperature_c"),
        utilization=raw.get("utilization_gpu"),
        xid_errors=[int(x) for x in raw.get("xids", [])][:256],
        ecc_uncorrected=grown("ecc_volatile_uncorrected"),
        ecc_corrected=grown("ecc_volatile_corrected"),
        sm_clock_mhz=raw.get("sm_clock_mhz"),
        max_sm_clock_mhz=raw.get("max_sm_clock_mhz"),
        clock_events=clock_events(raw.get("clock_event_mask")),
    )


# NVML's clock-event reason bits (nvmlClocksEventReason*, the former *ThrottleReason*).
CLOCK_EVENT_BITS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


def clock_events(mask: int | None) -> list[str]:
    """The names of the reasons set in ``mask``, in bit order."""
    if not mask:
        return []
    return [name for bit, name in CLOCK_EVENT_BITS.items() if mask & bit]


class NvmlProbe:
    """Opens NVML once; ``absent`` holds why not when it cannot."""

    def __init__(self, enabled: bool = True) -> None:
        self.absent: str | None = None
        self._nvml: Any = None
        self._handles: list[Any] = []
        self._events: Any = None
        self._prev: dict[int, dict[str, Any]] = {}
        if not enabled:
            self.absent = "disabled by --gpu off"
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._nvml = pynvml
        except Exception as exc:  # no library, no driver, no device: all mean "no GPU probe here"
            self.absent = f"no NVML: {type(exc).__name__}: {exc}"[:200]
        if self._nvml is not None and not self._handles:
            self.absent = "NVML found no GPU"
        if self.absent:
            log.info("GPU probe off: %s", self.absent)
            return
        self._events = self._xid_events()

    def _xid_events(self) -> Any:
        nvml = self._nvml
        try:
            events = nvml.nvmlEventSetCreate()
            for h in self._handles:
                nvml.nvmlDeviceRegisterEvents(h, nvml.nvmlEventTypeXidCriticalError, events)
            return events
        except Exception as exc:  # some GPUs (and containers) refuse event registration
            log.info("GPU XID events unavailable: %s", exc)
            return None

    @property
    def status(self) -> str:
        return self.absent or "ok"

    def read(self) -> list[GpuStatus]:
        if self.absent:
            return []
        xids = self._drain_xids()
        out = []
        for i, h in enumerate(self._handles):
            raw = {"index": i, "xids": xids.get(i, []), **self._reading(h)}
            out.append(gpu_status(raw, self._prev.get(i)))
            self._prev[i] = raw
        return out

    def _reading(self, h: Any) -> dict[str, Any]:
        nvml = self._nvml
        raw: dict[str, Any] = {}
        for key, fn in (
            ("temperature_c", lambda: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)),
            ("utilization_gpu", lambda: nvml.nvmlDeviceGetUtilizationRates(h).gpu),
            (
                "ecc_volatile_uncorrected",
                lambda: nvml.nvmlDeviceGetTotalEccErrors(
                    h, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC
                ),
            ),
            (
                "ecc_volatile_corrected",
                lambda: nvml.nvmlDeviceGetTotalEccErrors(
                    h, nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, nvml.NVML_VOLATILE_ECC
                ),
            ),
            ("sm_clock_mhz", lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM)),
            ("max_sm_clock_mhz", lambda: nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_SM)),
            ("clock_event_mask", lambda: nvml.nvmlDeviceGetCurrentClocksEventReasons(h)),
        ):
            try:
                raw[key] = fn()
            except Exception:  # not supported on this GPU (no ECC, ...): leave it out
                raw[key] = None
        return raw

    def _drain_xids(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        if self._events is None:
            return out
        nvml = self._nvml
        for _ in range(256):
            try:
                data = nvml.nvmlEventSetWait(self._events, 0)
            except Exception:  # NVML_ERROR_TIMEOUT: nothing pending
                break
            try:
                i = int(nvml.nvmlDeviceGetIndex(data.device))
            except Exception:
                i = 0
            out.setdefault(i, []).append(int(data.eventData))
        return out
