"""Monitoring: the track record's resolution, rolling skill and coverage, input drift, alerts.

:mod:`mur.monitoring.report` is the contract (import-light); :mod:`mur.monitoring.store` keeps it in
PostgreSQL; :mod:`mur.monitoring.compute` builds it; :mod:`mur.monitoring.task` runs it every market hour.
"""
