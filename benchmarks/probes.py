"""Measuring helpers the benchmarks share: the data words, peak memory (CPU resident set or
the CUDA allocator, reset per block), parameter bytes by dtype, and the library versions."""

from __future__ import annotations

import gc
import importlib.util
import os
import platform
import threading
import time
from typing import Any

GIB = 1024**3
WORDS_EN = ("the cat dog water park morning egg capital city river house tree sun rain bread honey "
            "week day night season winter summer friend book school music road market garden").split()
WORDS_ES = ("el gato perro agua parque mañana huevo capital ciudad río casa árbol sol lluvia pan miel "
            "semana día noche estación invierno verano amigo libro escuela música camino mercado jardín").split()


class PeakMemory:
    """Peak resident-set growth while a block runs (sampled every 5 ms from /proc)."""

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = 0
        self._stop = threading.Event()

    def _rss(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * self.page

    def __enter__(self):
        self.start = self._rss()
        self.peak = self.start
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def status_kib(field: str) -> int:
    """A KiB field of /proc/self/status (VmRSS: resident now; VmHWM: its high-water mark)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def reset_peak_rss() -> None:
    """VmHWM := the current resident set (Linux: `echo 5 > /proc/self/clear_refs`)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (/proc/loadavg): the machines these run on are shared."""
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


def release() -> None:
    """Drop what the last block left: Python garbage and the CUDA allocator's cache."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class DeviceMemory:
    """Peak memory of a block: the CUDA caching allocator's reserved bytes (the CUDA context
    is outside it), or on CPU the resident-set growth."""

    def __init__(self, cuda: bool):
        self.cuda = cuda

    def __enter__(self):
        import torch

        release()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()  # per block: an earlier one must not inflate this one
            self.start = torch.cuda.memory_allocated()
            self.start_reserved = torch.cuda.memory_reserved()
        else:
            self.rss = PeakMemory().__enter__()
        return self

    def __exit__(self, *exc):
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            self.peak_gib = (torch.cuda.max_memory_reserved() - self.start_reserved) / GIB
            self.allocated_gib = (torch.cuda.max_memory_allocated() - self.start) / GIB
        else:
            self.rss.__exit__(*exc)
            self.peak_gib = self.allocated_gib = self.rss.growth_mb / 1024

    def record(self) -> dict[str, Any]:
        what = "torch.cuda.max_memory_reserved growth in this part" if self.cuda else "resident-set growth (CPU)"
        return {"peak_gib": self.peak_gib, "peak_allocated_gib": self.allocated_gib, "measured_as": what}


def parameter_bytes(model: Any) -> dict[str, int]:
    """Bytes of `model`'s parameters by storage dtype (a 4-bit NF4 weight is stored packed in
    uint8, two values a byte, so it shows under torch.uint8)."""
    found: dict[str, int] = {}
    for param in model.parameters():
        found[str(param.dtype)] = found.get(str(param.dtype), 0) + param.numel() * param.element_size()
    return found


def environment(cuda: bool) -> dict[str, Any]:
    import torch

    found = {"python": platform.python_version(), "torch": torch.__version__, "cuda_available": cuda,
             "cpu_count": os.cpu_count()}
    for package in ("transformers", "accelerate", "peft", "trl", "bitsandbytes", "flash_attn"):
        found[package] = _version(package)
    if cuda:
        found["gpu"] = torch.cuda.get_device_name(0)
        found["gpu_memory_gib"] = torch.cuda.get_device_properties(0).total_memory / GIB
        found["cuda"] = torch.version.cuda
    return found


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    if importlib.util.find_spec(package) is None:
        return None
    try:
        return version(package.replace("_", "-"))
    except PackageNotFoundError:
        return "installed"
