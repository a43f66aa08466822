"""The operator web page, its JSON API and Prometheus /metrics (`inspector gateway`, docs/plant.md "web")."""

from inspector.gateway.web.app import make_app, serve_http

__all__ = ["make_app", "serve_http"]
