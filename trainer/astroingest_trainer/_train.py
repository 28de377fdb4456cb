"""The training run: cube in, surrogate trained, checkpoints and metrics out to the stores.

One process per device (torchrun starts them; run directly it is one process). Rank 0
writes checkpoints and metrics; every rank reads its own shard of the cube. The run is
step-based: the training stream never ends (epoch follows epoch), so ranks always have
a batch for every step, and a checkpoint taken at any step resumes exactly there.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.functional import mse_loss
from torch.nn.parallel import DistributedDataParallel

from astroingest._exceptions import ConfigError
from astroingest._report import now_iso
from astroingest.cubes import CubeLocation, read_manifest
from astroingest_trainer._cache import CacheSettings
from astroingest_trainer._checkpoint import CheckpointStore, Pointer
from astroingest_trainer._config import TrainConfig
from astroingest_trainer._cube_dataset import ZarrCubeDataset
from astroingest_trainer._distributed import Job, end_job, start_job
from astroingest_trainer._loader import StreamLoader
from astroingest_trainer._metrics import MetricsLog, new_run_id
from astroingest_trainer._model import Surrogate, stack_inputs
from astroingest_trainer._stream import StateMismatch

log = logging.getLogger("astroingest.train")
FORMAT = "astroingest-checkpoint"


@dataclass(frozen=True, slots=True)
class TrainResult:
    run_id: str
    step: int
    status: str  # "completed", "stopped" (--stop-after-steps) or "interrupted" (a signal)
    checkpoint: Pointer | None


def train(config: TrainConfig, *, stop_after: int | None = None) -> TrainResult:
    """Train as ``config`` says, resuming from the latest checkpoint if there is one."""
    job = start_job(config.train.device)
    try:
        with _stop_signals() as stop:
            return Trainer(config, job).run(stop, stop_after)
    finally:
        end_job()


class Trainer:
    def __init__(self, config: TrainConfig, job: Job) -> None:
        self.config = config
        self.job = job
        self.settings = config.train
        self.inputs = list(config.data.inputs)
        self.target = config.data.target
        _seed_everything(self.settings.seed, self.settings.deterministic)
        self.checkpoints = CheckpointStore(
            config.output.checkpoints, config.store_options(), config.output.keep
        )
        self.run_id = job.broadcast(new_run_id())
        self.started_at = now_iso()
        self.metrics = (
            MetricsLog(
                config.output.logs, config.store_options(), self.run_id, config.output.upload_every
            )
            if job.main
            else None
        )
        if job.main:
            removed = self.checkpoints.clean_partial()
            if removed:
                log.info("removed %d leftovers of checkpoint saves that were cut off", removed)
        pointer: Pointer | None = job.broadcast(self.checkpoints.latest() if job.main else None)
        self.resumed_from = pointer
        saved = self.checkpoints.load(pointer) if pointer else None
        self.location = CubeLocation(config.data.cube, config.data.endpoint_url, config.data.region)
        snapshot = saved["data"]["snapshot"] if saved else config.data.snapshot
        self.snapshot: str = job.broadcast(
            (snapshot or self._latest_snapshot()) if job.main else None
        )
        self.train_data, self.val_data = self._datasets()
        self.model = self._model().to(job.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=self.settings.lr, weight_decay=self.settings.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.step = 0
        if saved:
            self._restore(saved)
        self.loader = StreamLoader(
            self.train_data,
            num_workers=config.data.num_workers,
            start_method=config.data.start_method,
            pin_memory=job.device.type == "cuda",
        )
        self.ddp: nn.Module = (
            DistributedDataParallel(
                self.model, device_ids=[job.local_rank] if job.device.type == "cuda" else None
            )
            if job.grouped
            else self.model
        )
        self.bf16 = job.device.type == "cuda" and self.settings.precision in ("auto", "bf16")

    # -- setup ------------------------------------------------------------------------

    def _latest_snapshot(self) -> str:
        _, session = read_manifest(self.location)
        return str(session.snapshot_id)

    def _datasets(self) -> tuple[ZarrCubeDataset, ZarrCubeDataset | None]:
        data = self.config.data
        cache = CacheSettings(data.cache_dir, data.cache_size) if data.cache_dir else None
        common: dict[str, Any] = {
            "snapshot": self.snapshot,
            "batch_size": self.settings.batch_size,
            "seed": self.settings.seed,
            "val_fraction": data.val_fraction,
            "cache": cache,
            "prefetch": data.prefetch,
            "rank": self.job.rank,
            "world_size": self.job.world_size,
        }
        variables = [*self.inputs, self.target]
        held_out = data.val_fraction > 0
        try:
            train = ZarrCubeDataset(
                self.location,
                variables,
                epochs=None,
                split="train" if held_out else "all",
                **common,
            )
            val = (
                ZarrCubeDataset(self.location, variables, shuffle=False, split="val", **common)
                if held_out
                else None
            )
        except ValueError as error:
            raise ConfigError(f"{self.config.path.name}: [data]: {error}") from None
        readers = self.job.world_size * max(1, data.num_workers)
        if len(train.blocks) < readers:
            raise ConfigError(
                f"{self.config.path.name}: [data]: the training split has {len(train.blocks)} "
                f"blocks (chunks along {train.manifest.samples.dim!r}) for {readers} readers "
                f"({self.job.world_size} process(es) x {max(1, data.num_workers)} worker(s)): "
                "use fewer num_workers or a smaller val_fraction"
            )
        return train, val

    def _model(self) -> Surrogate:
        manifest = self.train_data.manifest
        target = manifest.variables[self.target]
        grid = target.shape[1:]
        for name in self.inputs:
            if manifest.variables[name].shape[1:] != grid:
                raise ConfigError(
                    f"{self.config.path.name}: [data] inputs: {name!r} has the grid "
                    f"{manifest.variables[name].shape[1:]}, the target {self.target!r} {grid}"
                )
        window = manifest.samples.window
        torch.manual_seed(self.settings.seed)  # the same initial weights on every rank
        return Surrogate(
            window * len(self.inputs),
            window,
            len(grid),
            self.config.model.width,
            self.config.model.depth,
            self.config.model.kernel,
        )

    def _lr_factor(self, step: int) -> float:
        settings = self.settings
        if step < settings.warmup_steps:
            return (step + 1) / settings.warmup_steps
        if settings.schedule == "constant":
            return 1.0
        span = max(1, settings.steps - settings.warmup_steps)
        progress = min(1.0, (step - settings.warmup_steps) / span)
        floor = settings.min_lr / settings.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    def _restore(self, saved: dict[str, Any]) -> None:
        if saved.get("format") != FORMAT:
            raise ConfigError(f"{self.checkpoints.url}: not an astroingest checkpoint")
        try:
            self.model.load_state_dict(saved["model"])
        except RuntimeError:
            raise ConfigError(
                f"the checkpoint in {self.checkpoints.url} is of a different model "
                "([model] or [data] inputs changed): start with a new [output] checkpoints"
            ) from None
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.step = int(saved["step"])
        ranks = saved["data"]["ranks"]
        same_layout = len(ranks) == self.job.world_size
        try:
            if not same_layout:
                raise StateMismatch(f"saved by {len(ranks)} process(es)")
            state = ranks[self.job.rank]
            if state["streams"] not in (None, max(1, self.config.data.num_workers)):
                raise StateMismatch(f"saved with {state['streams']} worker(s) per process")
            self.train_data.load_state_dict(state)
        except StateMismatch as error:
            epoch = 1 + max(max((c[0] for c in s["cursors"].values()), default=0) for s in ranks)
            self.train_data.set_epoch(epoch)
            if self.job.main:
                log.warning(
                    "the data position cannot be resumed exactly (%s); starting epoch %d",
                    error,
                    epoch,
                )
        rngs = saved["rng"]
        if same_layout:
            _set_rng_state(rngs[self.job.rank], self.job.device)

    # -- the loop ---------------------------------------------------------------------

    def run(self, stop: threading.Event, stop_after: int | None) -> TrainResult:
        self._announce()
        steps = self.settings.steps
        until = steps if stop_after is None else min(steps, self.step + stop_after)
        last_saved: Pointer | None = self.resumed_from
        batches = iter(self.loader)
        try:
            status, last_saved = self._steps(batches, stop, until, last_saved)
        finally:
            batches.close()  # stops the DataLoader workers
        if status != "completed" and (last_saved is None or last_saved.step != self.step):
            last_saved = self._save()
        self._finish(status, last_saved)
        return TrainResult(self.run_id, self.step, status, last_saved)

    def _steps(
        self,
        batches: Iterator[dict[str, Any]],
        stop: threading.Event,
        until: int,
        last_saved: Pointer | None,
    ) -> tuple[str, Pointer | None]:
        settings = self.settings
        meter = _Meter()
        status = "completed"
        while self.step < settings.steps:
            if self.job.any(stop.is_set()):
                status = "interrupted"
                break
            if self.step >= until:
                status = "stopped"
                break
            loss = self._optimizer_step(batches, meter)
            self.step += 1
            if self.step % settings.log_every == 0 or self.step == settings.steps:
                self._log(loss, meter)
            if self._validation_due():
                self._validate()
            if self.step % settings.checkpoint_every == 0 or self.step == settings.steps:
                last_saved = self._save()
        return status, last_saved

    def _optimizer_step(self, batches: Iterator[dict[str, Any]], meter: _Meter) -> torch.Tensor:
        accum = self.settings.grad_accum
        total = torch.zeros((), device=self.job.device)
        for micro in range(accum):
            waited = time.perf_counter()
            batch = next(batches)
            meter.wait += time.perf_counter() - waited
            x = stack_inputs(batch, self.inputs).to(self.job.device, non_blocking=True)
            y = batch[self.target].to(self.job.device, non_blocking=True)
            last = micro == accum - 1
            sync = contextlib.nullcontext() if last or not self.job.grouped else self.ddp.no_sync()  # type: ignore[operator]
            with sync:
                with self._autocast():
                    prediction = self.ddp(x)
                loss = mse_loss(prediction.float(), y) / accum
                loss.backward()  # type: ignore[no-untyped-call]
            total += loss.detach()
            meter.samples += len(y)
        if self.settings.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.bf16:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _validation_due(self) -> bool:
        every = self.settings.val_every or self.settings.checkpoint_every
        return self.val_data is not None and (
            self.step % every == 0 or self.step == self.settings.steps
        )

    def _validate(self) -> None:
        assert self.val_data is not None
        self.val_data.set_epoch(0)
        loader = StreamLoader(
            self.val_data,
            num_workers=self.config.data.val_workers,
            start_method=self.config.data.start_method,
        )
        limit = self.settings.val_batches
        total, count = 0.0, 0.0
        self.model.eval()
        with torch.no_grad(), self._autocast():
            for number, batch in enumerate(loader):
                if limit is not None and number >= limit:
                    break
                x = stack_inputs(batch, self.inputs).to(self.job.device)
                y = batch[self.target].to(self.job.device)
                prediction = self.model(x).float()
                total += float(mse_loss(prediction, y, reduction="sum"))
                count += y.numel()
        self.model.train()
        total, count = self.job.sum([total, count])
        if self.job.main and count:
            loss = total / count
            log.info("step %d: validation loss %.5g", self.step, loss)
            self._record({"event": "validation", "step": self.step, "val_loss": loss})

    def _log(self, loss: torch.Tensor, meter: _Meter) -> None:
        elapsed = time.perf_counter() - meter.started
        loss_sum, samples, wait = self.job.sum([float(loss), meter.samples, meter.wait])
        world = self.job.world_size
        fields: dict[str, Any] = {
            "event": "train",
            "step": self.step,
            "loss": loss_sum / world,
            "lr": self.scheduler.get_last_lr()[0],
            "samples_per_s": samples / elapsed if elapsed > 0 else 0.0,
            "data_wait": min(1.0, wait / world / elapsed) if elapsed > 0 else 0.0,
            "epoch": self.train_data.current_epoch(),
        }
        if self.job.device.type == "cuda":
            fields["gpu_memory_gib"] = torch.cuda.max_memory_allocated(self.job.device) / 2**30
        if self.job.main:
            log.info(
                "step %d/%d  loss %.5g  lr %.3g  %.1f samples/s  data wait %.0f%%  epoch %d",
                self.step,
                self.settings.steps,
                fields["loss"],
                fields["lr"],
                fields["samples_per_s"],
                100 * fields["data_wait"],
                fields["epoch"],
            )
            self._record(fields)
        meter.reset()

    def _record(self, fields: dict[str, Any]) -> None:
        if self.metrics is not None:
            self.metrics.record(fields)

    # -- checkpoints ------------------------------------------------------------------

    def _save(self) -> Pointer | None:
        data_states = self.job.gather(self.loader.state_dict())
        rng_states = self.job.gather(_rng_state(self.job.device))
        if not self.job.main:
            return None
        state = {
            "format": FORMAT,
            "version": 1,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "data": {"snapshot": self.snapshot, "ranks": data_states},
            "rng": rng_states,
            "world_size": self.job.world_size,
            "model_spec": self._model_spec(),
            "config": self.config.as_dict(),
        }
        started = time.perf_counter()
        pointer = self.checkpoints.save(self.step, state)
        seconds = time.perf_counter() - started
        log.info(
            "step %d: checkpoint %s/%s (%.1f MiB, %.1f s)",
            self.step,
            self.checkpoints.url,
            pointer.key,
            (pointer.size or 0) / 2**20,
            seconds,
        )
        self._record(
            {"event": "checkpoint", "step": self.step, "key": pointer.key, "seconds": seconds}
        )
        if self.metrics is not None:
            self.metrics.upload()  # the logs are as durable as the checkpoint
        return pointer

    def _model_spec(self) -> dict[str, Any]:
        """What inference needs besides the weights: the variables and their scaling."""
        manifest = self.train_data.manifest
        return {
            "inputs": self.inputs,
            "target": self.target,
            "window": manifest.samples.window,
            "normalization": {
                name: {
                    "mean": manifest.variables[name].stats.mean,
                    "std": manifest.variables[name].stats.std,
                }
                for name in [*self.inputs, self.target]
            },
            **self.config.model.model_dump(),
        }

    # -- reporting --------------------------------------------------------------------

    def _announce(self) -> None:
        if not self.job.main:
            return
        data = self.train_data
        val = self.val_data.samples if self.val_data else 0
        log.info(
            "cube %s version %d (snapshot %s): %d training samples in %d blocks, %d held out",
            self.location.url,
            data.manifest.version,
            self.snapshot,
            data.samples,
            len(data.blocks),
            val,
        )
        log.info(
            "%d process(es) x %d worker(s) on %s%s; %d parameters",
            self.job.world_size,
            self.config.data.num_workers,
            self.job.device,
            " (bf16 autocast)" if self.bf16 else "",
            sum(p.numel() for p in self.model.parameters()),
        )
        if self.resumed_from:
            log.info(
                "resuming from step %d (%s/%s)",
                self.step,
                self.checkpoints.url,
                self.resumed_from.key,
            )
        self._write_run("running", None)

    def _finish(self, status: str, pointer: Pointer | None) -> None:
        if not self.job.main:
            return
        self._write_run(status, pointer)
        if self.metrics is not None:
            self.metrics.upload()
        log.info("%s at step %d of %d", status, self.step, self.settings.steps)

    def _write_run(self, status: str, pointer: Pointer | None) -> None:
        if self.metrics is None:
            return
        self.metrics.write_run(
            {
                "status": status,
                "started_at": self.started_at,
                "step": self.step,
                "steps": self.settings.steps,
                "world_size": self.job.world_size,
                "cube": self.location.url,
                "snapshot": self.snapshot,
                "resumed_from": self.resumed_from.key if self.resumed_from else None,
                "checkpoint": pointer.key if pointer else None,
                "config": self.config.as_dict(),
            }
        )


@dataclass(slots=True)
class _Meter:
    """Counters between two log lines."""

    started: float = 0.0
    samples: float = 0.0
    wait: float = 0.0

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.started = time.perf_counter()
        self.samples = 0.0
        self.wait = 0.0


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: Any = np.random.get_state()
    name, keys, position, has_gauss, cached = state
    return {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


@contextlib.contextmanager
def _stop_signals() -> Iterator[threading.Event]:
    """SIGTERM (a pod being stopped) and Ctrl-C end the run at the next step, after a
    checkpoint; a second one stops it at once."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(number: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        log.warning("signal %d: stopping after this step, with a checkpoint", number)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
