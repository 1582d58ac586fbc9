"""The dashboard's pages: each module has ``layout(context, account)`` and ``register_callbacks(app)``."""
