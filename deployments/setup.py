"""What prefect.yaml cannot create: the work pool, and optionally an S3 credentials block.

    python deployments/setup.py [--credentials-block NAME]

Idempotent. With ``--credentials-block`` the S3 keys and endpoint of the current environment
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, e.g. from
``eval "$(fineflow stack env)"``) are saved as a prefect-aws ``AwsCredentials`` block, whose
secret the API masks; runs then name the block instead of needing ``AWS_*`` on every worker.
"""

from __future__ import annotations

import argparse
import os

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists

from fineflow.stack import WORK_POOL


def create_work_pool() -> bool:
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=WORK_POOL, type="process"))
        except ObjectAlreadyExists:
            return False
    return True


def save_credentials_block(name: str) -> None:
    from prefect_aws import AwsClientParameters, AwsCredentials

    missing = [key for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not os.environ.get(key)]
    if missing:
        raise SystemExit(f"cannot save {name}: {', '.join(missing)} not set (try: eval \"$(fineflow stack env)\")")
    AwsCredentials(
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        aws_client_parameters=AwsClientParameters(endpoint_url=os.environ.get("AWS_ENDPOINT_URL")),
    ).save(name, overwrite=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--credentials-block", help="save the environment's S3 keys as this AwsCredentials block")
    args = parser.parse_args()
    print(f"work pool {WORK_POOL}: {'created' if create_work_pool() else 'exists'}")
    if args.credentials_block:
        save_credentials_block(args.credentials_block)
        print(f"credentials block {args.credentials_block}: saved")


if __name__ == "__main__":
    main()
