"""deploy/: what can be checked without building images or a cluster. Every YAML parses, images
are pinned, the environment the manifests set is what the code reads, and the commands the
image and the Deployment run are commands the CLI accepts."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import opentelemetry.sdk.environment_variables as otel_variables
import pytest
import yaml
from temporalio.envconfig import ClientConfig

from agentparallels.cli import build_parser
from tests.support.cli import run_cli

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
OURS = "agentparallels-worker"  # the image deploy/Dockerfile builds


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def compose() -> dict[str, Any]:
    [doc] = documents(DEPLOY / "compose.yaml")
    return doc


def k8s(kind: str) -> list[dict[str, Any]]:
    found = [d for p in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in documents(p)]
    return [d for d in found if d.get("kind") == kind]


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of each Dockerfile instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


# --- which environment variables the code reads ----------------------------------------------

PROJECT_SOURCES = [
    *(ROOT / "agentparallels").rglob("*.py"),
    *(ROOT / "activities").rglob("*.py"),
    ROOT / "worker.py",
]


def read_by_project() -> set[str]:
    """Upper-case names quoted in the project's code: the variables it reads itself."""
    text = "".join(p.read_text() for p in PROJECT_SOURCES)
    return set(re.findall(r"\"((?:AGENTPARALLELS|OPENAI|ANTHROPIC)_[A-Z0-9_]+)\"", text))


def read_by_temporal_client(name: str) -> bool:
    """Whether the SDK's environment configuration (used by every client) reads ``name``."""
    plain = ClientConfig.load_client_connect_config(disable_file=True, override_env_vars={})
    varied = ClientConfig.load_client_connect_config(
        disable_file=True, override_env_vars={name: "probe.example:7233"}
    )
    return plain != varied


def read_by_aws_sdk() -> set[str]:
    """The variables botocore (the S3 blob store's client) reads: its session settings, the
    credentials, and the endpoint URL (read by name in its config provider)."""
    from botocore.configprovider import BOTOCORE_DEFAUT_SESSION_VARIABLES
    from botocore.credentials import EnvProvider

    names = {EnvProvider.ACCESS_KEY, EnvProvider.SECRET_KEY, "AWS_ENDPOINT_URL"}
    for setting in BOTOCORE_DEFAUT_SESSION_VARIABLES.values():
        env = setting[1]
        names |= {env} if isinstance(env, str) else set(env or ())
    return names


def known(name: str) -> bool:
    if name.startswith("AWS_"):
        return name in read_by_aws_sdk()
    if name.startswith("TEMPORAL_"):
        return read_by_temporal_client(name)
    if name.startswith("OTEL_"):  # read by the OpenTelemetry SDK and its OTLP exporters
        return name in vars(otel_variables)
    return name in read_by_project()


def test_the_environment_check_tells_real_names_from_made_up_ones() -> None:
    """The check below would catch a typo: real names pass, near misses do not."""
    for real in ("TEMPORAL_ADDRESS", "OTEL_EXPORTER_OTLP_ENDPOINT", "AGENTPARALLELS_BLOB_URL"):
        assert known(real), real
    assert known("AWS_DEFAULT_REGION") and known("AWS_ENDPOINT_URL")
    for typo in ("TEMPORAL_ADRESS", "OTEL_EXPORTER_OTLP_ENDPIONT", "AGENTPARALLELS_BLOBS_DIR"):
        assert not known(typo), typo
    for typo in ("AWS_REGION_NAME", "AWS_ENDPOINT"):
        assert not known(typo), typo


# --- YAML and images ---------------------------------------------------------------------------


def test_every_yaml_file_parses() -> None:
    """Each YAML file under deploy/ is valid YAML with at least one document."""
    files = sorted(DEPLOY.rglob("*.yaml"))
    assert {p.name for p in files} >= {"compose.yaml", "otel-collector.yaml", "deployment.yaml"}
    for path in files:
        assert documents(path), path


def test_compose_images_have_explicit_tags() -> None:
    """No service runs an untagged or :latest image."""
    for name, service in compose()["services"].items():
        image = service["image"]
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        assert tag and tag != "latest", f"{name}: {image}"


def test_compose_has_the_promised_services() -> None:
    """PostgreSQL-backed Temporal, its UI, scalable workers, a collector exporting to Jaeger."""
    services = compose()["services"]
    assert services["temporal"]["image"].startswith("temporalio/server:")
    assert services["temporal"]["environment"]["DB"] == "postgres12"
    assert services["temporal-ui"]["image"].startswith("temporalio/ui:")
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert services["worker"]["image"].startswith(OURS)
    collector = documents(DEPLOY / "otel-collector.yaml")[0]
    [exporter] = collector["service"]["pipelines"]["traces"]["exporters"]
    assert collector["exporters"][exporter]["endpoint"].split(":")[0] in services
    assert services["jaeger"]["image"].startswith("jaegertracing/all-in-one:")
    worker_env = services["worker"]["environment"]
    assert worker_env["OTEL_EXPORTER_OTLP_ENDPOINT"].split("//")[1].split(":")[0] in services


def test_environment_set_for_our_containers_is_read_by_the_code() -> None:
    """Every variable compose, the ConfigMap and the Secrets give the worker and the codec
    server is one the code (or the SDKs it configures) reads."""
    names: set[str] = set()
    for service in compose()["services"].values():
        if service["image"].startswith(OURS):
            names |= set(service.get("environment", {}))
    for config in k8s("ConfigMap"):
        names |= set(config["data"])
    [deployment] = k8s("Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env_secrets = {ref["secretRef"]["name"] for ref in container["envFrom"] if "secretRef" in ref}
    for secret in k8s("Secret"):
        if secret["metadata"]["name"] in env_secrets:
            names |= set(secret["stringData"])
    for instruction, args in dockerfile():
        if instruction == "ENV":
            names |= {m for m in re.findall(r"([A-Z][A-Z0-9_]+)=", args)}
    names.discard("PYTHONUNBUFFERED")  # read by Python itself
    assert {"TEMPORAL_ADDRESS", "OTEL_EXPORTER_OTLP_ENDPOINT", "OPENAI_API_KEY"} <= names
    assert sorted(n for n in names if not known(n)) == []


# --- commands ------------------------------------------------------------------------------------


def image_command() -> list[str]:
    steps = dict(dockerfile())  # the last of each instruction counts
    return json.loads(steps["ENTRYPOINT"]) + json.loads(steps["CMD"])


def test_image_runs_a_real_cli_command_as_a_non_root_user_with_bubblewrap() -> None:
    """ENTRYPOINT + CMD is `agentparallels worker`, whose --help exits 0; the image switches to
    an unprivileged user and installs bubblewrap and git; what it COPYs exists."""
    command = image_command()
    assert command == ["agentparallels", "worker"]
    done = run_cli(*command[1:], "--help", timeout=60)
    assert done.returncode == 0, done.stderr
    steps = dockerfile()
    [user] = [args for instruction, args in steps if instruction == "USER"]
    assert user not in ("root", "0")
    installs = " ".join(args for instruction, args in steps if instruction == "RUN")
    assert re.search(r"apt-get install [^&]*\bbubblewrap\b", installs)
    assert re.search(r"apt-get install [^&]*\bgit\b", installs)
    for instruction, args in steps:
        if instruction == "COPY":
            for source in shlex.split(args)[:-1]:
                assert (ROOT / source).exists(), source


@pytest.mark.parametrize(
    "where",
    ["k8s", "compose-worker", "compose-codec-server"],
)
def test_container_arguments_are_accepted_by_the_cli(where: str) -> None:
    """The arguments the Deployment and compose pass to the image's `agentparallels`
    entrypoint parse with the CLI's own parser."""
    if where == "k8s":
        [deployment] = k8s("Deployment")
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert "command" not in container  # the image's entrypoint stays
        args = container["args"]
        assert container["image"].startswith(OURS)
    else:
        args = compose()["services"][where.removeprefix("compose-")]["command"]
    parsed = build_parser().parse_args(args)
    assert parsed.command == args[0]


def test_k8s_objects_refer_to_each_other_consistently() -> None:
    """The HPA scales the Deployment; the Deployment's envFrom, volumes and the keyring path in
    the ConfigMap name objects and files that exist."""
    [deployment] = k8s("Deployment")
    [hpa] = k8s("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    names = {d["metadata"]["name"] for d in k8s("ConfigMap") + k8s("Secret")}
    for ref in container["envFrom"]:
        assert next(iter(ref.values()))["name"] in names
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    [config] = k8s("ConfigMap")
    keyring = Path(config["data"]["AGENTPARALLELS_CODEC_KEY_FILE"])
    secret_name = mounts[str(keyring.parent)]["secret"]["secretName"]
    [codec_secret] = [s for s in k8s("Secret") if s["metadata"]["name"] == secret_name]
    assert keyring.name in codec_secret["stringData"]
    # Large payloads go to an S3 bucket: the pods share no volume.
    assert config["data"]["AGENTPARALLELS_BLOB_URL"].startswith("s3://")
    assert k8s("PersistentVolumeClaim") == []
    assert pod["securityContext"]["runAsNonRoot"] is True
    kustomize = documents(DEPLOY / "k8s" / "kustomization.yaml")[0]
    listed = set(kustomize["resources"])
    expected = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")}
    assert listed == expected - {"kustomization.yaml", "temporal-values.yaml"}


def test_docker_compose_accepts_the_file_when_docker_is_here() -> None:
    """Docker's own validation of compose.yaml, where the compose plugin is installed (it is
    checked with PyYAML above in any case)."""
    docker = shutil.which("docker")
    has_compose = (
        docker is not None
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    )
    if has_compose:
        done = subprocess.run(
            [docker, "compose", "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    else:
        assert compose()["name"] == "agentparallels"


# --- published schemas, and the OTLP endpoint --------------------------------------------------


def test_compose_file_validates_against_the_compose_specification() -> None:
    """deploy/compose.yaml against the Compose Specification's JSON schema, as check-jsonschema
    ships it (no network, no docker); the same schema rejects a misspelt key."""
    import importlib.resources

    import jsonschema

    vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    validator = jsonschema.Draft202012Validator(
        json.loads((vendored / "compose-spec.json").read_text())
    )
    doc = compose()
    assert [e.message for e in validator.iter_errors(doc)] == []
    worker = {**doc["services"]["worker"], "stop_grace_periods": "30s"}
    assert list(validator.iter_errors({**doc, "services": {**doc["services"], "worker": worker}}))


def test_k8s_manifests_validate_against_the_kubernetes_schemas() -> None:
    """Every Kubernetes object under deploy/k8s against the OpenAPI-derived schemas of the newest
    Kubernetes release kubernetes-validate ships, strictly (an unknown field is an error)."""
    import kubernetes_validate

    version = kubernetes_validate.latest_version()
    objects = [
        (path.name, doc)
        for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
        for doc in documents(path)
        if "kind" in doc and not doc["apiVersion"].startswith("kustomize.config.k8s.io/")
    ]
    assert {doc["kind"] for _, doc in objects} >= {"Deployment", "ConfigMap", "Secret"}
    for name, doc in objects:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{name}: {doc['kind']} does not validate: {e}")
    [(_, deployment)] = [(n, d) for n, d in objects if d["kind"] == "Deployment"]
    wrong = json.loads(json.dumps(deployment))
    wrong["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["configMapRefs"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, version, strict=True)


OTLP_PORTS = {"grpc": 4317, "http/protobuf": 4318}


def test_otlp_endpoint_port_and_protocol_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wherever deploy/ sets an OTLP endpoint it also sets the protocol, and the endpoint's port
    is the collector's receiver for that protocol; the code exports with that protocol."""
    from agentparallels import tracing

    receivers = documents(DEPLOY / "otel-collector.yaml")[0]["receivers"]["otlp"]["protocols"]
    listening = {
        "grpc": int(receivers["grpc"]["endpoint"].rsplit(":", 1)[1]),
        "http/protobuf": int(receivers["http"]["endpoint"].rsplit(":", 1)[1]),
    }
    assert listening == OTLP_PORTS
    blocks = {f"compose {n}": s.get("environment", {}) for n, s in compose()["services"].items()}
    blocks |= {f"ConfigMap {c['metadata']['name']}": c["data"] for c in k8s("ConfigMap")}
    endpoints = {
        where: env for where, env in blocks.items() if "OTEL_EXPORTER_OTLP_ENDPOINT" in env
    }
    assert endpoints, "no OTLP endpoint is set anywhere"
    for where, env in endpoints.items():
        protocol = env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        assert protocol in OTLP_PORTS, f"{where}: set OTEL_EXPORTER_OTLP_PROTOCOL explicitly"
        port = int(env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/").rsplit(":", 1)[1])
        assert port == listening[protocol], (
            f"{where}: {protocol} is served on {OTLP_PORTS[protocol]}"
        )
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        module = type(tracing._exporter()).__module__
        assert (".grpc." in module) == (protocol == "grpc"), module
