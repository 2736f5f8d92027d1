"""The web dashboard of SPEC §11: ``dashboard_app(queue, token=...)`` is an ASGI app
(Starlette, server-rendered Jinja2 pages, our own small script) to mount anywhere;
``qanat dashboard app:queue`` serves it alone (``qanat.dashboard.serve``)."""

from __future__ import annotations

from qanat.dashboard.app import dashboard_app

__all__ = ["dashboard_app"]
