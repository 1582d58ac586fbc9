"""One-shot MinIO setup for docker-compose (service ``minio-init``): the artefact bucket and the app's user.

    python infra/minio/init_bucket.py

Reads ``MINIO_ENDPOINT`` (host:port, default ``minio:9000``), ``MINIO_ROOT_USER``, ``MINIO_ROOT_PASSWORD``,
``MUR_S3_BUCKET``, ``MUR_S3_ACCESS_KEY`` and ``MUR_S3_SECRET_KEY``. Idempotent:

1. waits until MinIO answers (up to ``MINIO_WAIT_S``, default 120 s);
2. creates the bucket if missing and turns versioning on (an overwritten or deleted artefact that MLflow's
   registry still points at can be restored), with one lifecycle rule: Ray jobs' results that their
   submitter never took (it died first) expire after ``JOB_RESULT_DAYS``, and the versions a taken result
   leaves behind after a day (:func:`job_results_lifecycle`);
3. unless the app uses the root credentials, creates/updates the user ``MUR_S3_ACCESS_KEY`` and attaches a
   policy that allows S3 actions on that bucket only, so the services never hold the root password.

Runs in the project image (the ``minio`` SDK is a project dependency), so no separate ``mc`` image is needed.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from mur.waiting import wait_until

POLICY_NAME = "mur-app"


def bucket_policy(bucket: str) -> dict[str, Any]:
    """IAM policy: every S3 action on ``bucket`` and its objects, plus listing bucket names."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:ListAllMyBuckets", "s3:GetBucketLocation"],
                "Resource": ["arn:aws:s3:::*"],
            },
            {
                "Effect": "Allow",
                "Action": ["s3:*"],
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
            },
        ],
    }


def job_results_lifecycle() -> Any:
    """The bucket's lifecycle: expire what Ray jobs left under ``job-results/`` (mur.orchestration.job_submission)."""
    from minio.commonconfig import ENABLED, Filter
    from minio.lifecycleconfig import Expiration, LifecycleConfig, NoncurrentVersionExpiration, Rule

    from mur.orchestration.job_submission import JOB_RESULT_DAYS, JOB_RESULTS_PREFIX

    rule = Rule(
        ENABLED,
        rule_filter=Filter(prefix=JOB_RESULTS_PREFIX),
        rule_id="expire-job-results",
        expiration=Expiration(days=JOB_RESULT_DAYS),
        noncurrent_version_expiration=NoncurrentVersionExpiration(noncurrent_days=1),
    )
    return LifecycleConfig([rule])


def _required(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise SystemExit(f"minio-init: {name} is not set")
    return value


def main() -> int:
    from minio import Minio, MinioAdmin
    from minio.commonconfig import ENABLED
    from minio.credentials import StaticProvider
    from minio.versioningconfig import VersioningConfig

    endpoint = os.environ.get("MINIO_ENDPOINT", "minio:9000")
    root_user, root_password = _required("MINIO_ROOT_USER"), _required("MINIO_ROOT_PASSWORD")
    bucket = os.environ.get("MUR_S3_BUCKET", "mur-artifacts")
    app_key, app_secret = _required("MUR_S3_ACCESS_KEY"), _required("MUR_S3_SECRET_KEY")
    client = Minio(endpoint, access_key=root_user, secret_key=root_password, secure=False, region="us-east-1")

    [exists] = wait_until(  # an exception: connection refused / 503 while MinIO starts
        lambda: [client.bucket_exists(bucket)],
        what=f"MinIO at {endpoint} (minio-init)",
        timeout_s=float(os.environ.get("MINIO_WAIT_S", "120")),
        interval_s=2,
        retry_on=(Exception,),
        error=SystemExit,
    )
    if not exists:
        client.make_bucket(bucket)
        print(f"minio-init: created bucket {bucket}", flush=True)
    client.set_bucket_versioning(bucket, VersioningConfig(ENABLED))
    client.set_bucket_lifecycle(bucket, job_results_lifecycle())

    if app_key != root_user:
        admin = MinioAdmin(
            endpoint=endpoint, credentials=StaticProvider(root_user, root_password), secure=False
        )
        admin.user_add(app_key, app_secret)  # creates the user or resets its secret
        admin.policy_add(POLICY_NAME, policy=bucket_policy(bucket))
        try:
            admin.attach_policy([POLICY_NAME], user=app_key)
        except Exception as exc:  # MinIO refuses to attach a policy that is already attached
            if "already" not in str(exc).lower():
                raise
        print(f"minio-init: user {app_key} may use bucket {bucket} (policy {POLICY_NAME})", flush=True)
    print(f"minio-init: bucket {bucket} ready (versioning on, job results expire)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
