"""The orchestration node's HTTP side: ``qanat serve`` (the worker protocol under
``/node``, the public API under ``/api``), shared by the dashboard for its auth rules.

Layering: this package sits above the client (``qanat.queue``); nothing below imports it.
"""
