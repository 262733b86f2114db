"""Peak resident memory of a block of code in this (Linux) process, for the CPU benchmarks.

``reset_peak()`` resets ``VmHWM`` to the current resident size through ``/proc/self/clear_refs`` and returns that
size; after the block, ``peak_bytes_since(base)`` is the highest resident size reached above it. Run each
measurement in a fresh child process so that earlier allocations do not hide in the allocator's free lists.
"""

from __future__ import annotations


def _proc_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> int:
    """Reset the peak resident size to the current one; the current resident size in KiB."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    return _proc_kib("VmRSS")


def peak_bytes_since(base_kib: int) -> int:
    """Bytes of the peak resident size above ``base_kib`` (from :func:`reset_peak`)."""
    return (_proc_kib("VmHWM") - base_kib) * 1024
