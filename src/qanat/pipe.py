"""Pipes: named streams of events that trigger jobs (``Pipe``, ``pipe.into``, ``job.into``).

``await pipe.send(data)`` validates ``data`` against the pipe's ``input`` type, records the
event and starts one execution of every job that lists the pipe in its ``triggers``, all
in one storage transaction. Inside a running job the send is a checkpointed step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pydantic

from qanat import codec
from qanat.errors import ConfigurationError
from qanat.sizes import check_size
from qanat.steps import send_step, wait_step
from qanat.steps.state import current_or_none
from qanat.views import EventInfo

if TYPE_CHECKING:
    from qanat.job import Job
    from qanat.queue import Queue

T = TypeVar("T")


@dataclass(frozen=True)
class Trigger:
    """What a job lists in ``triggers=``: a pipe or another job, and an optional transform.

    Made by ``pipe.into(fn)`` or ``job.into(fn)`` (a bare pipe in ``triggers`` is
    ``Trigger(pipe, None)``): ``fn(data)`` (sync or async) returns the input of the job
    that lists the trigger; without it the event data itself is the input.
    """

    source: Pipe[Any] | Job[Any]
    transform: Callable[[Any], Any] | None = None

    @property
    def name(self) -> str:
        return self.source.name


class Pipe(Generic[T]):
    """A named stream of events. ``input`` is a pydantic model or any type pydantic
    validates (``None``: any JSON-encodable data).

    Register it with ``Queue(pipes=[...])``; send from application code with
    ``await queue.pipes.<name>.send(data)`` (or the pipe object itself once registered),
    and from inside a job with ``await pipe.send(data)`` (a checkpointed step).
    """

    def __init__(self, name: str, input: Any = None) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError(f"a pipe needs a non-empty name, got {name!r}")
        self.name = name
        self.input = input
        try:
            self._adapter: pydantic.TypeAdapter[Any] | None = (
                None if input is None else pydantic.TypeAdapter(input)
            )
        except pydantic.PydanticUserError as exc:
            raise ConfigurationError(
                f"pipe {name!r}: input={input!r} is not usable: {exc}"
            ) from None
        except pydantic.PydanticSchemaGenerationError as exc:
            raise ConfigurationError(
                f"pipe {name!r}: input={input!r} is not usable: {exc}"
            ) from None
        self._queue: Queue | None = None

    def __repr__(self) -> str:
        return f"<Pipe {self.name}>"

    def into(self, fn: Callable[[Any], Any]) -> Trigger:
        """A trigger: each event's ``fn(data)`` becomes the input of the job listing it."""
        if not callable(fn):
            raise ConfigurationError(f"pipe {self.name!r}: into() takes a function, got {fn!r}")
        return Trigger(self, fn)

    # --- data -------------------------------------------------------------------------

    def encode(self, data: Any) -> tuple[str, Any]:
        """Validate event data; its JSON text and the validated value.

        Raises ``pydantic.ValidationError`` (or ``TypeError`` for data JSON can't hold,
        ``PayloadTooLarge`` over ``Queue(max_payload=)``).
        """
        value = data if self._adapter is None else self._adapter.validate_python(data)
        where = f"the data of pipe {self.name!r}"
        limit = None if self._queue is None else self._queue.max_payload
        return check_size(codec.dumps(value, where=where), limit, where), value

    def data_schema(self, ref_template: str = "#/$defs/{model}") -> dict[str, Any]:
        """The JSON schema of the event data (``{}``, any JSON, without an ``input``
        type): for generated docs and forms (``/api/openapi.json``)."""
        if self._adapter is None:
            return {}
        return self._adapter.json_schema(ref_template=ref_template)

    def decode(self, text: str) -> Any:
        """Stored event data, revived to the pipe's input type."""
        value = codec.loads(text)
        if self.input is None:
            return value
        try:
            return codec.revive(value, self.input)
        except pydantic.ValidationError:  # the type changed since: the data as stored
            return value

    # --- sending --------------------------------------------------------------------

    async def send(self, data: T | Any) -> EventInfo:
        """Send an event: record it and start every job it triggers, in one transaction.

        Invalid data raises ``pydantic.ValidationError`` here and nothing is stored.
        Inside a running job this is a checkpointed step: a replay returns the recorded
        event and never sends again.
        """

        if current_or_none() is not None:
            return await send_step(self, data)
        if self._queue is None:
            raise ConfigurationError(
                f"pipe {self.name!r} is not registered on a queue: pass it in "
                "Queue(pipes=[...]) and send through queue.pipes or inside a running job"
            )
        return await self._queue.send_event(self, data)

    async def wait_for(
        self, match: Any = None, timeout: float | str | timedelta | None = None
    ) -> T | None:
        """Inside a job: wait durably for an event on this pipe sent after this step began.

        ``match`` is a dict of expected fields (exact equality of each field given;
        nested dicts name nested fields; None matches any event) or a predicate called
        with the event data. Returns the event data (revived to the pipe's ``input``
        type), or None when ``timeout`` (a duration) passes first. The execution holds
        no concurrency slot while it waits, and a worker restart loses nothing.
        """

        return await wait_step(self, match, timeout)  # type: ignore[no-any-return]
