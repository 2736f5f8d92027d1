"""What a queue registers: its jobs and pipes, by name, and a folder of job modules."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from qanat.errors import ConfigurationError, UnknownJob, UnknownPipe
from qanat.job import Job
from qanat.pipe import Pipe

T = TypeVar("T")


class _Registry(Generic[T]):
    """Registered objects by attribute (``reg.name``) or by name (``reg["name"]``)."""

    def __init__(self, registry: dict[str, T], kind: str, missing: type[Exception]) -> None:
        self._registry = registry
        self._kind = kind
        self._missing = missing

    def __getitem__(self, name: str) -> T:
        try:
            return self._registry[name]
        except KeyError:
            known = ", ".join(sorted(self._registry)) or "none"
            raise self._missing(
                f"no {self._kind} named {name!r} on this queue ({self._kind}s: {known})"
            ) from None

    def __getattr__(self, name: str) -> T:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __iter__(self) -> Any:
        return iter(self._registry.values())

    def __len__(self) -> int:
        return len(self._registry)

    def __contains__(self, name: object) -> bool:
        return name in self._registry


class Jobs(_Registry["Job[Any]"]):
    """``queue.jobs``: the registered jobs by attribute or by name."""

    def __init__(self, registry: dict[str, Job[Any]]) -> None:
        super().__init__(registry, "job", UnknownJob)


class Pipes(_Registry["Pipe[Any]"]):
    """``queue.pipes``: the registered pipes by attribute or by name."""

    def __init__(self, registry: dict[str, Pipe[Any]]) -> None:
        super().__init__(registry, "pipe", UnknownPipe)


def register(registry: dict[str, Any], obj: Any, cls: type[Any], kind: str, hint: str) -> None:
    if not isinstance(obj, cls):
        raise ConfigurationError(
            f"Queue({kind}s=...) takes {cls.__name__} objects{' ' + hint if hint else ''}, "
            f"got {obj!r}"
        )
    if obj.name in registry and registry[obj.name] is not obj:
        raise ConfigurationError(f"two {kind}s are named {obj.name!r}; {kind} names must be unique")
    registry[obj.name] = obj


def load_jobs(jobs: Sequence[Job[Any]] | str | Path) -> list[Job[Any]]:
    if not isinstance(jobs, str | Path):
        if not isinstance(jobs, Iterable):
            raise ConfigurationError(
                f"Queue(jobs=) takes a list of jobs or a folder of job modules, got {jobs!r}"
            )
        return list(jobs)
    folder = Path(jobs)
    if not folder.is_dir():
        raise ConfigurationError(f"Queue(jobs={str(jobs)!r}): not a folder")
    found: list[Job[Any]] = []
    for path in sorted(folder.glob("*.py")):
        mod_name = f"qanat_jobs_{folder.name}_{path.stem}"
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        spec.loader.exec_module(module)
        found.extend(v for v in vars(module).values() if isinstance(v, Job))
    return found
