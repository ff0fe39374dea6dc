"""Fault injection for tests: make a worker fail on purpose.

Off unless the environment variable ``TARTOK_FAULT_INJECT`` is set. Its value
is a comma-separated list of directives:

    load_fail             raise while loading the model (the worker sends LoadFailed)
    load_sleep_s=N        sleep N seconds in the model load (a slow first download)
    kill_on_key=KEY       SIGKILL the worker when it is about to tokenize sample KEY
                          (KEY may be repeated: kill_on_key=A,kill_on_key=B)
    kill_after=N          SIGKILL the worker after it has tokenized N samples in total
    slow_ms=N             sleep N ms before every model batch (to make timing tests reliable)
    slow_stage_ms=N       sleep N ms after every model stage (a long batch that progresses)
    device_lost_after=N   once N samples have gone into the model in this process, every
                          model call raises what PyTorch raises for a lost CUDA device
    hang_after=N          once N samples have gone into the model in this process, every
                          model call blocks forever with the process alive (a hung kernel)
    model_error_tar=NAME  every model call raises a plain RuntimeError while the worker is
                          on the tar whose file name is NAME
    oom_tar=NAME          every model call raises what PyTorch raises out of device memory
                          while the worker is on the tar NAME: its clips do not fit even alone

The model-call directives act through the tokenizer's ``fault_hook``, called at the start
of every model call on the thread that runs it. Nothing here runs in a normal run: with
the variable unset every check is a cheap no-op and no hook is installed.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_VAR = "TARTOK_FAULT_INJECT"
LOST_DEVICE_MESSAGE = "CUDA error: an illegal memory access was encountered"
OUT_OF_MEMORY_MESSAGE = "CUDA out of memory. Tried to allocate 2.00 GiB (injected)"
CUDA_ERROR_ILLEGAL_ADDRESS = 700
"""``cudaErrorIllegalAddress``: the code PyTorch puts on the AcceleratorError it raises."""

log = logging.getLogger("tartok_tui.worker")

_INT_DIRECTIVES = ("kill_after", "device_lost_after", "hang_after")
_FLOAT_DIRECTIVES = ("slow_ms", "slow_stage_ms", "load_sleep_s")
_TAR_DIRECTIVES = ("model_error_tar", "oom_tar")


def lost_device_error() -> RuntimeError:
    """What PyTorch raises after a CUDA context is lost (illegal memory access)."""
    import torch

    accelerator_error = getattr(torch, "AcceleratorError", None)
    if accelerator_error is None:
        return RuntimeError(LOST_DEVICE_MESSAGE)
    # Raised from C++, it carries the CUDA error code as `error_code`.
    exc = accelerator_error(LOST_DEVICE_MESSAGE)
    exc.error_code = CUDA_ERROR_ILLEGAL_ADDRESS
    return exc


@dataclass
class Faults:
    load_fail: bool = False
    load_sleep_s: float = 0.0
    kill_keys: frozenset[str] = field(default_factory=frozenset)
    kill_after: int | None = None
    slow_ms: float = 0.0
    slow_stage_ms: float = 0.0
    device_lost_after: int | None = None
    hang_after: int | None = None
    model_error_tar: str | None = None
    oom_tar: str | None = None
    _tokenized: int = field(default=0, compare=False)
    _into_model: int = field(default=0, compare=False)
    _tar_name: str | None = field(default=None, compare=False)
    _lock: Any = field(default_factory=threading.Lock, compare=False, repr=False)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Faults:
        value = (environ if environ is not None else os.environ).get(ENV_VAR, "")
        faults = cls()
        keys: set[str] = set()
        for raw in value.split(","):
            directive = raw.strip()
            if not directive:
                continue
            name, _, arg = directive.partition("=")
            if name == "load_fail":
                faults.load_fail = True
            elif name == "kill_on_key":
                keys.add(arg)
            elif name in _TAR_DIRECTIVES:
                setattr(faults, name, arg)
            elif name in _INT_DIRECTIVES:
                setattr(faults, name, int(arg))
            elif name in _FLOAT_DIRECTIVES:
                setattr(faults, name, float(arg))
            else:
                raise ValueError(f"{ENV_VAR}: unknown directive {directive!r}")
        faults.kill_keys = frozenset(keys)
        return faults

    # ------------------------------------------------------------------ worker side

    def on_load(self) -> None:
        if self.load_sleep_s:
            log.warning("injected slow load: sleeping %.1f s", self.load_sleep_s)
            time.sleep(self.load_sleep_s)
        if self.load_fail:
            raise RuntimeError(f"injected load failure ({ENV_VAR}=load_fail)")

    def on_lease(self, tar_path: str) -> None:
        self._tar_name = Path(tar_path).name

    def before_batch(self, keys: Iterable[str]) -> None:
        if self.slow_ms:
            time.sleep(self.slow_ms / 1000.0)
        if self.kill_keys and not self.kill_keys.isdisjoint(keys):
            os.kill(os.getpid(), signal.SIGKILL)

    def after_batch(self, n: int) -> None:
        self._tokenized += n
        if self.kill_after is not None and self._tokenized >= self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    # ------------------------------------------------------------------ tokenizer side

    def model_call_hook(self) -> Callable[[int], None] | None:
        """The tokenizer's ``fault_hook``, or None when no directive acts in model calls."""
        wanted = (self.device_lost_after, self.hang_after, self.model_error_tar, self.oom_tar)
        if all(v is None for v in wanted):
            return None
        return self._model_call

    def wrap_progress(self, progress: Callable[[], None]) -> Callable[[], None]:
        """The tokenizer's ``progress_hook``: `progress`, made slow by ``slow_stage_ms``."""
        if not self.slow_stage_ms:
            return progress
        delay = self.slow_stage_ms / 1000.0

        def slow_progress() -> None:
            progress()
            time.sleep(delay)

        return slow_progress

    def _model_call(self, batch_size: int) -> None:
        with self._lock:
            before = self._into_model
            self._into_model += batch_size
        if self.device_lost_after is not None and before >= self.device_lost_after:
            raise lost_device_error()
        if self.hang_after is not None and before >= self.hang_after:
            log.warning("injected hang: this model call never returns (%d samples in)", before)
            threading.Event().wait()
        if self.model_error_tar is not None and self._tar_name == self.model_error_tar:
            raise RuntimeError(f"injected model error on {self._tar_name}")
        if self.oom_tar is not None and self._tar_name == self.oom_tar:
            import torch

            raise torch.OutOfMemoryError(OUT_OF_MEMORY_MESSAGE)
