"""The scale-out files in infra/, validated against their schemas (no Docker engine or
Kubernetes cluster exists here): the Compose Specification's JSON schema, Kubernetes' own
OpenAPI schemas (kubernetes-validate), and the Dask operator's CRD schemas (dask-kubernetes)."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import REPO

INFRA = REPO / "infra"
K8S_VERSION = "1.33.0"
SECRET_KEYS = ("AWS_SECRET_ACCESS_KEY", "POSTGRES_PASSWORD", "PREFECT_API_KEY")


def interpolate(text: str, environment: dict[str, str]) -> str:
    """Compose's variable substitution: ${VAR}, ${VAR:-default}, ${VAR:?error}."""

    def value(match: re.Match) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        if environment.get(name):
            return environment[name]
        if operator == ":-":
            return argument
        if operator == ":?":
            raise KeyError(f"{name}: {argument}")
        return ""

    return re.sub(r"\$\{([A-Z0-9_]+)(?:(:[-?])([^}]*))?\}", value, text)


def compose_file(environment: dict[str, str]) -> dict:
    return yaml.safe_load(interpolate((INFRA / "docker-compose.yml").read_text(), environment))


ENV = {"FINEFLOW_S3_ACCESS_KEY": "key", "FINEFLOW_S3_SECRET_KEY": "secret", "POSTGRES_PASSWORD": "pw"}


def test_compose_file_follows_the_compose_specification():
    schema = json.loads(resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text())
    document = compose_file(ENV)
    jsonschema.validate(document, schema, cls=jsonschema.Draft7Validator)
    assert set(document["services"]) == {"postgres", "prefect-server", "s3", "dask-scheduler", "dask-worker", "prefect-worker"}
    worker = document["services"]["prefect-worker"]["environment"]
    assert worker["FINEFLOW_DASK_ADDRESS"] == "tcp://dask-scheduler:8786" and worker["PREFECT_API_URL"].startswith("http://prefect-server")
    assert document["services"]["dask-worker"]["deploy"]["replicas"] == 2
    # the image the Dask processes run is fineflow's, built from the Dockerfile beside it
    assert (INFRA / document["services"]["dask-worker"]["build"]["dockerfile"].removeprefix("infra/")).exists()


def test_compose_declares_its_secrets_required():
    """Every secret is a ${VAR:?message} reference: Compose refuses to start without it."""
    with pytest.raises(KeyError, match="FINEFLOW_S3_SECRET_KEY"):
        compose_file({k: v for k, v in ENV.items() if k != "FINEFLOW_S3_SECRET_KEY"})


def test_no_secret_value_is_committed_in_infra():
    for path in [*INFRA.rglob("*.yml"), *INFRA.rglob("*.yaml"), INFRA / ".env.example"]:
        for line in path.read_text().splitlines():
            for key in SECRET_KEYS + ("FINEFLOW_S3_SECRET_KEY",):
                match = re.match(rf"\s*{key}\s*[:=]\s*(\S*)", line)
                if match and match.group(1):
                    assert match.group(1).startswith("${"), f"{path.name}: {line.strip()}"


def _dask_crd_schema(kind: str) -> dict:
    """The Dask operator's CRD schema for ``kind``, its references resolved to Kubernetes' definitions."""
    import kubernetes_validate

    templates = yaml.safe_load(resources.files("dask_kubernetes.operator.customresources").joinpath("templates.yaml").read_text())
    k8s_root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{K8S_VERSION}-local"
    k8s = json.loads((k8s_root / "_definitions.json").read_text())
    text = json.dumps(templates["definitions"])
    text = re.sub(r"python://dask_kubernetes/operator/customresources/templates.yaml#/definitions/", "#/$defs/", text)
    text = re.sub(r"python://k8s_crd_resolver/schemata/k8s-[0-9.]+\.json#/definitions/", "#/$defs/", text)
    return {"$schema": k8s["$schema"], "$ref": f"#/$defs/dask.k8s.api.v1.{kind}", "$defs": {**k8s["$defs"], **json.loads(text)}}


def validate_crd(document: dict) -> None:
    body = {k: v for k, v in document.items() if k not in ("apiVersion", "kind", "metadata")}
    schema = _dask_crd_schema(document["kind"])
    jsonschema.validators.validator_for(schema)(schema).validate(body)


@pytest.mark.parametrize("path", sorted((INFRA / "kubernetes").glob("*.yaml")), ids=lambda p: p.name)
def test_kubernetes_manifests_are_valid(path):
    import kubernetes_validate

    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert documents
    for document in documents:
        if document["apiVersion"].startswith("kubernetes.dask.org/"):
            validate_crd(document)
        else:
            kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def test_a_broken_manifest_is_caught():
    """The validation above can fail: a typo in a pod spec is reported."""
    import kubernetes_validate

    document = next(yaml.safe_load_all((INFRA / "kubernetes" / "dask-cluster.yaml").read_text()))
    document["spec"]["worker"]["replicas"] = "eight"
    with pytest.raises(jsonschema.ValidationError):
        validate_crd(document)
    document["spec"]["worker"]["replicas"] = 8
    document["spec"]["worker"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises(jsonschema.ValidationError):
        validate_crd(document)
    worker = yaml.safe_load_all((INFRA / "kubernetes" / "prefect-worker.yaml").read_text())
    deployment = [d for d in worker if d["kind"] == "Deployment"][0]
    deployment["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_the_dockerfile_copies_what_exists_and_installs_the_wheel():
    dockerfile = (INFRA / "Dockerfile").read_text()
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, flags=re.M)  # (not a copy between build stages)
    paths = [p for line in copied for p in line.split()]
    assert {"fineflow", "tasks", "flows", "deployments", "uv.lock", "prefect.yaml"} <= set(paths)
    assert all((REPO / p).exists() for p in paths)
    # the image runs an installed wheel, never the source tree (packaged files resolve in site-packages)
    assert "uv build --wheel" in dockerfile and "/dist/*.whl" in dockerfile
    assert not re.search(r"uv sync|pip install (-e|--editable)", dockerfile)


def test_prefect_yaml_deploys_every_registered_stage_kind():
    """prefect.yaml is written by hand (descriptions, defaults, schedules): this keeps its stage
    deployments and the registry in step, both ways."""
    from importlib.metadata import entry_points

    from fineflow import registry
    from fineflow.flows.deployed import stage_flows

    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    stages = {d["name"]: d for d in deployments if "stage" in d.get("tags", [])}
    installed = {point.name for point in entry_points(group=registry.ENTRY_POINT_GROUP)}  # not a test's plug-ins
    assert set(stages) == installed, "prefect.yaml's stage deployments differ from the registered kinds"
    flows = stage_flows()
    import deployments.stages as entrypoints

    for kind, deployment in stages.items():
        assert deployment["entrypoint"] == f"deployments/stages.py:{kind}_stage"
        assert deployment.get("work_pool"), f"{kind}: `prefect deploy --all` needs a work pool for every deployment"
        assert getattr(entrypoints, f"{kind}_stage") is flows[f"{kind}_stage"]
        default = deployment.get("parameters", {}).get("run", {}).get("stage")
        if default is not None:  # the form's defaults are a valid config of that kind
            registry.get(kind).config.model_validate(default)
        # ... and valid for the form's own schema, which the Prefect server checks when deploying (a 422 otherwise)
        # (required values are left to the user's run, as the server allows).
        from prefect.utilities.callables import parameter_schema
        from prefect.utilities.schema_tools.validation import validate

        schema = parameter_schema(flows[f"{kind}_stage"]).model_dump_for_openapi()
        validate(deployment.get("parameters", {}), schema, raise_on_error=True, ignore_required=True)
