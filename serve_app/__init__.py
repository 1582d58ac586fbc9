"""The Ray Serve application: a FastAPI ingress, a registry watcher and one Forecaster deployment per pair.

Deploy it with ``mur serve`` or ``serve deploy serve_app/config.yaml``; see ``docs/serving.md``.
"""
