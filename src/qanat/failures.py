"""Errors as stored JSON, and back: so a replay raises the same error at the same place."""

from __future__ import annotations

import importlib
import json
import traceback
from typing import Any

from qanat.errors import ExecutionFailed


def encode_error(exc: BaseException, *, with_traceback: bool = True) -> str:
    """The JSON text recorded for an error: its type, module, message and traceback."""
    data: dict[str, Any] = {
        "type": type(exc).__name__,
        "module": type(exc).__module__,
        "message": str(exc),
    }
    try:
        json.dumps(exc.args)
        data["args"] = list(exc.args)
    except (TypeError, ValueError):
        pass
    if with_traceback and exc.__traceback__ is not None:
        data["traceback"] = "".join(traceback.format_exception(exc))[-8000:]
    return json.dumps(data)


def error_fields(text: str) -> dict[str, Any]:
    """The recorded fields of an error (type, module, message, traceback)."""
    data = json.loads(text)
    return data if isinstance(data, dict) else {"type": "Error", "message": str(data)}


def decode_error(text: str, execution_id: str | None = None) -> Exception:
    """Rebuild a recorded error: the same class when it can be imported and built from its
    message, otherwise ``ExecutionFailed`` carrying the original type name and message."""
    data = error_fields(text)
    name, module, message = data.get("type", "Error"), data.get("module"), data.get("message", "")
    if module:
        try:
            cls = getattr(importlib.import_module(module), name)
            if isinstance(cls, type) and issubclass(cls, Exception):
                args = data.get("args")
                exc = cls(*args) if isinstance(args, list) else cls(message)
                if str(exc) == message:
                    return exc
        except Exception:
            pass
    return ExecutionFailed(name, message, execution_id)
