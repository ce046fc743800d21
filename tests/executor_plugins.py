"""Plug-in tasks for the executor tests (loaded by path, in workers too).

``killer-quadratic``: the run of seed 1 kills its own process at its 5th step, as a crash or an
out-of-memory kill would. ``counted-quadratic``: every run appends a line to the file named by
``$BENCH_TEST_COUNT`` (its process id, and the value of the variable that
``$BENCH_TEST_ENV`` names, if any) and takes a little time per step, so that concurrent coordinators overlap
(with ``$BENCH_TEST_TOGETHER=N``, a run waits until N processes have begun one);
``stalled-quadratic`` counts its run and then spends ten minutes building its model;
``big-quadratic`` counts its run and declares a memory need of 8 GiB. Under a stand-in MPS
daemon: ``mps-lost-quadratic`` counts its run; at the 5th step of seed 0 it fails as CUDA does
when the MPS server fails under it, the first time only (``$BENCH_TEST_MPS=once``, a marker file
beside the count) or every time (``always``), or kills the daemon whose pid is in
``$BENCH_TEST_MPS_PID`` and goes on, slowly (``kill``, the first time only); ``off``: never.
``forkserver-killer-quadratic`` kills its worker's fork server at the 5th step of seed 0.
``half-sent-quadratic``: at the 5th step of seed 1 its worker writes the first bytes of a
message to the coordinator and is killed before the rest, as a kill in the middle of a send would
leave it. ``failing-setup-quadratic`` raises while it prepares its data, for every seed.
``exiting-quadratic``: the run of seed 1 calls ``sys.exit(3)`` at its 5th step;
``exiting-setup-quadratic`` calls ``sys.exit(5)`` while it prepares its data;
``exiting-record-quadratic``: the run of seed 1 calls ``sys.exit(3)`` as its record is made,
after its training loop. ``rank-one-failing-lm``: ``lm-small`` whose rank 1, under torchrun,
fails at its 3rd training loss: it raises, or calls ``sys.exit(3)`` if ``$BENCH_TEST_EXIT`` is
set. ``fast-clock-rank-one-lm``: ``lm-small`` whose rank 1 reads a run-loop clock that runs an
hour ahead at every reading, so that its own clock would end a ``max_seconds`` run at once.
``slow-rank-zero-lm``: ``lm-small`` whose rank 0 takes ``$BENCH_TEST_SLOW`` seconds to prepare
its data; with ``$BENCH_TEST_PG_TIMEOUT`` set, the process group torchrun's ranks join has that
many seconds as its collectives' deadline.
"""

from __future__ import annotations

import gc
import os
import signal
import struct
import sys
import time

import torch

from bench_cli.tasks import TASKS
from bench_cli.tasks.valleys import NoisyQuadratic

if "BENCH_TEST_PG_TIMEOUT" in os.environ and not hasattr(torch.distributed, "_bench_test_init"):
    import datetime

    torch.distributed._bench_test_init = torch.distributed.init_process_group

    def _init_with_deadline(*args, **kwargs):
        seconds = float(os.environ["BENCH_TEST_PG_TIMEOUT"])
        kwargs["timeout"] = datetime.timedelta(seconds=seconds)
        return torch.distributed._bench_test_init(*args, **kwargs)

    torch.distributed.init_process_group = _init_with_deadline


class _AtStep:
    """Calls ``at_step(seed, step)`` before each training loss of a run (steps from 1)."""

    def batches(self, seed: int):
        self._seed, self._steps = seed, 0
        return super().batches(seed)

    def loss(self, model, batch):
        self._steps += 1
        self.at_step(self._seed, self._steps)
        return super().loss(model, batch)


@TASKS.register("killer-quadratic")
class KillerQuadratic(_AtStep, NoisyQuadratic):
    """The noisy quadratic; seed 1 dies at step 5."""

    def at_step(self, seed: int, step: int) -> None:
        if seed == 1 and step == 5:
            os.kill(os.getpid(), signal.SIGKILL)


@TASKS.register("exiting-quadratic")
class ExitingQuadratic(_AtStep, NoisyQuadratic):
    """The noisy quadratic; seed 1 calls sys.exit at step 5."""

    def at_step(self, seed: int, step: int) -> None:
        if seed == 1 and step == 5:
            sys.exit(3)


@TASKS.register("exiting-setup-quadratic")
class ExitingSetupQuadratic(NoisyQuadratic):
    """The noisy quadratic, whose set-up calls sys.exit."""

    def prepare(self, device):
        sys.exit(5)


@TASKS.register("exiting-record-quadratic")
class ExitingRecordQuadratic(NoisyQuadratic):
    """The noisy quadratic; seed 1 exits as its record is made (the run seeds torch with it)."""

    @property
    def seed_independent(self):
        if torch.initial_seed() == 1:
            sys.exit(3)
        return super().seed_independent


@TASKS.register("rank-one-failing-lm")
class RankOneFailingLM(TASKS.get("lm-small")):
    """lm-small, whose rank 1 fails at its 3rd training loss under torchrun."""

    def loss(self, model, batch):
        self._losses = getattr(self, "_losses", 0) + 1
        if os.environ.get("RANK") == "1" and self._losses == 3:
            if os.environ.get("BENCH_TEST_EXIT"):
                sys.exit(3)
            raise RuntimeError("boom on rank 1")
        return super().loss(model, batch)


class _FastClock:
    """The ``time`` module, but ``perf_counter`` gains an hour at every reading."""

    def __init__(self):
        self._ahead = 0.0

    def perf_counter(self) -> float:
        self._ahead += 3600.0
        return time.perf_counter() + self._ahead

    def __getattr__(self, name):
        return getattr(time, name)


@TASKS.register("fast-clock-rank-one-lm")
class FastClockRankOneLM(TASKS.get("lm-small")):
    """lm-small, whose rank 1 under torchrun reads a run-loop clock far ahead of rank 0's."""

    def prepare(self, device):
        if os.environ.get("RANK") == "1":
            import bench_cli.runner

            bench_cli.runner.time = _FastClock()
        super().prepare(device)


@TASKS.register("slow-rank-zero-lm")
class SlowRankZeroLM(TASKS.get("lm-small")):
    """lm-small, whose rank 0 under torchrun prepares its data slowly."""

    def prepare(self, device):
        if os.environ.get("RANK") == "0":
            time.sleep(float(os.environ["BENCH_TEST_SLOW"]))
        super().prepare(device)


@TASKS.register("failing-setup-quadratic")
class FailingSetupQuadratic(NoisyQuadratic):
    """The noisy quadratic, whose set-up fails."""

    def prepare(self, device):
        raise RuntimeError("no data for this task")


@TASKS.register("counted-quadratic")
class CountedQuadratic(NoisyQuadratic):
    """The noisy quadratic, counting its runs."""

    def build_model(self):
        extra = os.environ.get(os.environ.get("BENCH_TEST_ENV", ""), "")
        count = os.environ["BENCH_TEST_COUNT"]
        with open(count, "a") as fh:
            fh.write(f"{os.getpid()} {extra}".rstrip() + "\n")
        # $BENCH_TEST_TOGETHER=N: wait (up to a minute) until N processes have begun a run, so
        # that coordinators started at once are all under way before any record is written
        together, deadline = int(os.environ.get("BENCH_TEST_TOGETHER", "0")), time.time() + 60
        while time.time() < deadline:
            with open(count) as fh:
                if len({line.split()[0] for line in fh if line.strip()}) >= together:
                    break
            time.sleep(0.01)
        return super().build_model()

    def loss(self, model, batch):
        time.sleep(0.01)
        return super().loss(model, batch)


@TASKS.register("big-quadratic")
class BigQuadratic(CountedQuadratic):
    """The counted quadratic, declaring that a run needs 8 GiB of GPU memory."""

    memory_gib = 8.0


@TASKS.register("mps-lost-quadratic")
class MpsLostQuadratic(_AtStep, CountedQuadratic):
    """The counted quadratic, whose seed 0 loses its MPS server at its 5th step."""

    def at_step(self, seed: int, step: int) -> None:
        how = os.environ["BENCH_TEST_MPS"]
        marker = f"{os.environ['BENCH_TEST_COUNT']}.lost"
        first = how in ("once", "kill") and not os.path.exists(marker)
        if seed != 0 or step != 5 or not (first or how == "always"):
            return
        open(marker, "w").close()
        if how == "kill":
            with open(os.environ["BENCH_TEST_MPS_PID"]) as fh:
                os.kill(int(fh.read()), signal.SIGKILL)
            time.sleep(5)  # still running when the pool finds the daemon gone
        else:
            raise RuntimeError(
                "CUDA error: the remote procedural call between the MPS server and the MPS "
                "client failed"
            )


@TASKS.register("forkserver-killer-quadratic")
class ForkserverKillerQuadratic(_AtStep, CountedQuadratic):
    """The counted quadratic; at the 5th step of seed 0 it kills its worker's fork server (its
    parent, when that is a fork server) and goes on."""

    def at_step(self, seed: int, step: int) -> None:
        if seed == 0 and step == 5:
            with open(f"/proc/{os.getppid()}/cmdline", "rb") as fh:
                if b"forkserver" in fh.read():
                    os.kill(os.getppid(), signal.SIGKILL)


@TASKS.register("half-sent-quadratic")
class HalfSentQuadratic(_AtStep, NoisyQuadratic):
    """The noisy quadratic; seed 1 dies at step 5 in the middle of a message to the coordinator."""

    def at_step(self, seed: int, step: int) -> None:
        if seed == 1 and step == 5:
            from bench_cli.executors.worker import Events

            events = next(o for o in gc.get_objects() if isinstance(o, Events))
            pipe = events.send.__self__  # the worker's end of its pipe to the coordinator
            os.write(pipe.fileno(), struct.pack("!i", 1000) + b"\x80")  # 1 byte of 1,000
            os.kill(os.getpid(), signal.SIGKILL)


@TASKS.register("stalled-quadratic")
class StalledQuadratic(CountedQuadratic):
    """The counted quadratic, whose model takes ten minutes to build: a run that sends no
    progress for a long time, as a large task's set-up does."""

    def build_model(self):
        model = super().build_model()
        time.sleep(600)
        return model


from bench_cli.registry import OPTIMIZERS  # noqa: E402
from bench_cli.registry.adamw import AdamW  # noqa: E402


@OPTIMIZERS.register("saving-adamw")
class SavingAdamW(AdamW):
    """AdamW that saves its parameters after every step to ``$BENCH_TEST_PARAMS/rank<R>.pt``
    (so a test can compare the final parameters of every DDP rank)."""

    def step(self, closure=None):
        import torch

        out = super().step(closure)
        params = [p.detach().clone() for g in self.param_groups for p in g["params"]]
        rank = os.environ.get("RANK", "0")
        torch.save(params, os.path.join(os.environ["BENCH_TEST_PARAMS"], f"rank{rank}.pt"))
        return out
