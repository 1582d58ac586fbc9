"""Serving logic without a web framework, one module per concern:

- :mod:`mur.serving.http`: errors as HTTP answers, bearer-token auth, the monthly quota;
- :mod:`mur.serving.payload`: client-supplied candles validated into the klines frame;
- :mod:`mur.serving.market_cache`: the latest closed candles per pair, refreshed in the background;
- :mod:`mur.serving.champions`: champion models in the MLflow registry;
- :mod:`mur.serving.champion_store`: the last known champions on disk (for builds while MLflow is down);
- :mod:`mur.serving.model`: a champion loaded in onnxruntime (:class:`~mur.serving.model.LoadedModel`).
- :mod:`mur.serving.calibration`: the online conformal scales applied to the served ranges.

The window and the forecast body are :mod:`mur.model.inference`'s, shared with ``mur predict``. The Ray
Serve application (``serve_app/``) and the benchmark's single-process reference app call these; nothing
here imports Ray or FastAPI, and nothing runs at import time.
"""
