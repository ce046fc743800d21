"""Where a run ran: device, versions, and on a CPU the thread count, CPU model and load; and how
much memory each GPU has free."""

from __future__ import annotations

import os
import platform
import subprocess
from functools import lru_cache
from pathlib import Path

import torch

from bench_cli.results.record import Env


def resolve_device(name: str) -> torch.device:
    """The device a run uses; ``auto`` and ``cuda`` name the current GPU explicitly (a worker's
    own), so that data and model never land on different GPUs."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def default_threads(jobs: int = 1) -> int:
    """The documented CPU thread count of a run: the machine's cores shared evenly among the
    runs going on at once (``--jobs``), at least one each."""
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


@lru_cache(maxsize=1)
def _git_sha() -> str | None:
    import bench_cli

    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(bench_cli.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


@lru_cache(maxsize=1)
def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def environment(device: torch.device, world_size: int = 1) -> Env:
    import bench_cli

    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = platform.processor() or platform.machine() or device.type
    cpu = device.type == "cpu"
    try:
        load = os.getloadavg()[0] if cpu else None
    except OSError:
        load = None
    return Env(
        device=str(device),
        device_name=device_name,
        torch=torch.__version__,
        bench=bench_cli.__version__,
        python=platform.python_version(),
        platform=platform.platform(),
        git_sha=_git_sha(),
        threads=torch.get_num_threads() if cpu else None,
        cpu_model=cpu_model() if cpu else None,
        load_average=load,
        world_size=world_size,
    )


def gpu_free_bytes(gpus: list[int]) -> list[int]:
    """Each GPU's free memory, from NVML (``pynvml``, found by the GPU's UUID) where it is
    installed. Asking CUDA instead (``torch.cuda.mem_get_info``) makes the coordinator, which
    trains nothing, a CUDA context on every GPU: 0.1-0.4 s each, and memory held until it ends."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            uuids = [f"GPU-{torch.cuda.get_device_properties(g).uuid}" for g in gpus]
            return [
                pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByUUID(u)).free
                for u in uuids
            ]
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no pynvml, no NVML, a GPU it does not know (MIG): CUDA's
        return [torch.cuda.mem_get_info(g)[0] for g in gpus]
