"""Fault injection for tests: make a worker fail on purpose.

Off unless the environment variable ``TARTOK_FAULT_INJECT`` is set. Its value
is a comma-separated list of directives:

    load_fail           raise while loading the model (the worker sends LoadFailed)
    kill_on_key=KEY     SIGKILL the worker when it is about to tokenize sample KEY
                        (KEY may be repeated: kill_on_key=A,kill_on_key=B)
    kill_after=N        SIGKILL the worker after it has tokenized N samples in total
    slow_ms=N           sleep N ms before every model batch (to make timing tests reliable)

Nothing here runs in a normal run: with the variable unset every check is a
cheap no-op.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

ENV_VAR = "TARTOK_FAULT_INJECT"


@dataclass
class Faults:
    load_fail: bool = False
    kill_keys: frozenset[str] = field(default_factory=frozenset)
    kill_after: int | None = None
    slow_ms: float = 0.0
    _tokenized: int = 0

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
            elif name == "kill_after":
                faults.kill_after = int(arg)
            elif name == "slow_ms":
                faults.slow_ms = float(arg)
            else:
                raise ValueError(f"{ENV_VAR}: unknown directive {directive!r}")
        faults.kill_keys = frozenset(keys)
        return faults

    def on_load(self) -> None:
        if self.load_fail:
            raise RuntimeError(f"injected load failure ({ENV_VAR}=load_fail)")

    def before_batch(self, keys: Iterable[str]) -> None:
        if self.slow_ms:
            time.sleep(self.slow_ms / 1000.0)
        if self.kill_keys and not self.kill_keys.isdisjoint(keys):
            os.kill(os.getpid(), signal.SIGKILL)

    def after_batch(self, n: int) -> None:
        self._tokenized += n
        if self.kill_after is not None and self._tokenized >= self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
