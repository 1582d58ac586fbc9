"""Orchestration: the training DAG's task bodies, Ray job submission, alerts and the Airflow REST client.

Names shared by the DAG file, the local stack and the dashboard live here, once.
"""

DAG_ID = "mur_training"
"""The hourly training DAG (``dags/mur_training.py``)."""
MONITORING_DAG_ID = "mur_monitoring"
"""The hourly monitoring DAG (``dags/mur_monitoring.py``)."""
