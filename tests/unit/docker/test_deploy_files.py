"""Static checks of docker/ (Dockerfile, compose) and the Helm values: no Docker engine, no Helm here.

- Compose: validated against the vendored Compose Specification schema (tests/support/schemas/).
- Helm values: structural expectations only. This is NOT the chart's values.schema.json, which
  could not be fetched here (tests/support/schemas/README.md).
- Dockerfile: pinned base image in step with constraints.txt, pinned Terraform with a SHA-256
  check, a non-root USER, nothing secret in ENV/ARG.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from devstack.airflow_env import AUTH_MANAGER, SECRETS_BACKEND, airflow_env
from devstack.config import MOTO_ACCESS_KEY, MOTO_SECRET_KEY, PROFILES

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "docker-compose.yml"
HELM_VALUES = ROOT / "docker" / "helm" / "values.yaml"
COMPOSE_SCHEMA = ROOT / "tests" / "support" / "schemas" / "compose-spec.json"
COMPOSE_SCHEMA_SHA256 = "56bab44c85c0ce8affb74474950293f37d510673283a243bcd7eeadb900fa35c"
CHART_VERSION = "1.22.0"
TERRAFORM_VERSION = "1.10.5"
# terraform_1.10.5_SHA256SUMS as quoted by HashiCorp's Homebrew tap (Formula/terraform.rb).
TERRAFORM_SHA256 = {
    "LINUX_AMD64": "0566a24f5332098b15716ebc394be503f4094acba5ba529bf5eb0698ed5e2a90",
    "LINUX_ARM64": "0ca5d6977c7c46bfa4bbe030030b911e897cf0cb72bff5525fb76c10f1c3409a",
}
SECRET_WORDS = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|FERNET|PRIVATE|CREDENTIAL|ACCESS_KEY", re.I)
WORKER_SERVICES = ("worker-1", "worker-2")
AIRFLOW_SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer", *WORKER_SERVICES)


def _pinned(name: str) -> str:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.lower().startswith(f"{name}=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"{name} not pinned in constraints.txt")


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _key_values(args: str) -> dict[str, str]:
    return dict(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S*)", args))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def helm() -> dict[str, Any]:
    return yaml.safe_load(HELM_VALUES.read_text())


# --- Dockerfile --------------------------------------------------------------------------------
def test_dockerfile_base_image_is_the_pinned_airflow_version() -> None:
    froms = [args for word, args in _dockerfile_instructions() if word == "FROM"]
    assert len(froms) == 1, froms
    image = froms[0].split()[0]
    match = re.fullmatch(r"apache/airflow:(\d+\.\d+\.\d+)-python(\d+\.\d+)(@sha256:[0-9a-f]{64})?", image)
    assert match, f"base image not pinned to an exact official tag/digest: {image}"
    assert match.group(1) == _pinned("apache-airflow")
    assert match.group(2) == "3.11"


def test_dockerfile_installs_terraform_pinned_and_checksummed() -> None:
    instructions = _dockerfile_instructions()
    args = {}
    for word, rest in instructions:
        if word == "ARG":
            args.update(_key_values(rest))
    assert args["TERRAFORM_VERSION"] == TERRAFORM_VERSION
    for arch, digest in TERRAFORM_SHA256.items():
        assert args[f"TERRAFORM_SHA256_{arch}"] == digest
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    assert "https://releases.hashicorp.com/terraform/${TERRAFORM_VERSION}/" in runs
    assert "sha256sum -c" in runs
    # The check comes before the binary is unpacked.
    assert runs.index("sha256sum -c") < runs.index("extract('terraform'")
    assert "apt.releases.hashicorp.com" not in runs


def test_dockerfile_installs_the_pinned_requirements() -> None:
    runs = " ".join(rest for word, rest in _dockerfile_instructions() if word == "RUN")
    assert re.search(r"pip install .*-r \S*requirements\.txt -c \S*constraints\.txt", runs)


def test_dockerfile_copies_the_project_code() -> None:
    copies = " ".join(rest for word, rest in _dockerfile_instructions() if word == "COPY")
    for folder in ("include/", "plugins/", "dags/", "config/"):
        assert f" {folder} " in f" {copies} ", folder
    assert (ROOT / "include" / "policies" / "domains.yaml").exists()  # the policies ride in include/
    # The local stack and the stand-ins are local-only: no COPY names them or a parent of them.
    assert "devstack" not in copies
    assert not any(source in (".", "./") for source in copies.split()[:-1]), copies


def test_dockerfile_runs_as_non_root() -> None:
    users = [rest for word, rest in _dockerfile_instructions() if word == "USER"]
    assert users, "no USER instruction"
    final = users[-1].split(":")[0]
    assert final not in ("root", "0"), users


def test_dockerfile_bakes_in_no_secrets() -> None:
    for word, rest in _dockerfile_instructions():
        if word in ("ENV", "ARG"):
            for key in [*_key_values(rest), *re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)$", rest)]:
                if key.startswith("TERRAFORM_SHA256_"):
                    continue  # a public checksum, not a secret
                assert not SECRET_WORDS.search(key), f"{word} {key} looks like a secret"
    text = DOCKERFILE.read_text()
    assert "FERNET_KEY" not in text
    assert "SQL_ALCHEMY_CONN" not in text
    assert "BROKER_URL" not in text


# --- docker-compose.yml --------------------------------------------------------------------------
def test_vendored_compose_schema_is_unmodified() -> None:
    assert hashlib.sha256(COMPOSE_SCHEMA.read_bytes()).hexdigest() == COMPOSE_SCHEMA_SHA256


def _compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    jsonschema.Draft201909Validator.check_schema(schema)
    return jsonschema.Draft201909Validator(schema)


def test_compose_validates_against_the_compose_spec(compose: dict[str, Any]) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in _compose_validator().iter_errors(compose)]
    assert not errors, "\n".join(errors)


def test_compose_schema_check_is_not_vacuous(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["scheduler"]["restart_policy"] = "always"  # not a service key
    broken["services"]["worker-1"]["healthcheck"]["retries"] = "many"
    assert len(list(_compose_validator().iter_errors(broken))) >= 2


def test_compose_has_the_distributed_topology(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("postgres", "redis", "moto", "smtp-sink", "erp-standin", "openldap", *AIRFLOW_SERVICES):
        assert name in services, name
    env = services["scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "include.executors.celery.ResumeSafeCeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    commands = {name: services[name]["command"] for name in AIRFLOW_SERVICES}
    assert commands["scheduler"] == ["airflow", "scheduler"]
    assert commands["dag-processor"] == ["airflow", "dag-processor"]
    assert commands["triggerer"] == ["airflow", "triggerer"]
    assert commands["api-server"] == ["airflow", "api-server"]
    queues = {
        name: commands[name][commands[name].index("--queues") + 1].split(",") for name in WORKER_SERVICES
    }
    assert queues == {"worker-1": ["default", "platform"], "worker-2": ["default", "platform", "soc"]}
    assert "devstack.standins.erp" in " ".join(services["erp-standin"]["command"])
    for name in ("moto", "smtp-sink", "erp-standin"):  # stand-ins come from a mount, not the image
        assert "../devstack:/opt/orchestrator/devstack:ro" in services[name]["volumes"], name


def test_compose_services_have_healthchecks(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name != "airflow-init":
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_compose_publishes_on_loopback_only(compose: dict[str, Any]) -> None:
    published = 0
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str), f"{name}: {port}"
            assert port.startswith("127.0.0.1:"), f"{name}: {port}"
            published += 1
    assert published >= 7


def test_compose_holds_no_secret_values(compose: dict[str, Any]) -> None:
    """Every secret-looking setting is a required ${VAR:?} from docker/.env, never a literal."""
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if key.startswith("AIRFLOW__SECRETS__"):
                continue  # the secrets backend's settings; its kwargs are checked below
            if SECRET_WORDS.search(key):
                assert re.fullmatch(r"\$\{[A-Z_]+(:\?[^}]*)?\}", str(value)), f"{name}: {key}"
            if key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__BROKER_URL"):
                assert "${" in value, f"{name}: {key} has a literal password"
    kwargs = json.loads(compose["services"]["scheduler"]["environment"]["AIRFLOW__SECRETS__BACKEND_KWARGS"])
    # moto's documented dummy credentials, as in devstack/moto_seed.py; nothing else.
    assert (kwargs["aws_access_key_id"], kwargs["aws_secret_access_key"]) == (
        MOTO_ACCESS_KEY,
        MOTO_SECRET_KEY,
    )


def test_compose_agrees_with_the_embedded_settings(compose: dict[str, Any]) -> None:
    """The same Airflow settings as devstack/airflow_env.py, where they should agree."""
    # The native distributed mode (make test-distributed) is what compose runs in containers.
    local = airflow_env(replace(PROFILES["test"], executor="celery"))
    env = compose["services"]["scheduler"]["environment"]
    # Same names: every AIRFLOW__ setting of the embedded stack is set in compose too.
    missing = sorted(k for k in local if k.startswith("AIRFLOW__") and k not in env)
    assert not missing, missing
    # Same values where nothing host-, port-, path- or secret-specific is involved.
    differ_by_design = {
        "AIRFLOW__CELERY__BROKER_URL",  # compared below, minus host and password
        "AIRFLOW__CORE__DAGS_FOLDER",
        "AIRFLOW__CORE__PLUGINS_FOLDER",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__API__HOST",
        "AIRFLOW__API__PORT",
        "AIRFLOW__API__BASE_URL",
        "AIRFLOW__API__WORKERS",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT",
        "AIRFLOW__SECRETS__BACKEND_KWARGS",  # compared below, minus the endpoint
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH",
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST",  # compared below, minus the path
        "AIRFLOW__FAB__CONFIG_FILE",  # config/webserver_config.py, where the repo or image is
    }
    differing = {
        k: (local[k], env[k])
        for k in local
        if k.startswith("AIRFLOW__") and k not in differ_by_design and str(env[k]) != local[k]
    }
    assert not differing, differing
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://:${REDIS_PASSWORD")
    assert env["AIRFLOW__CELERY__BROKER_URL"].endswith("@redis:6379/0")
    assert env["AIRFLOW__CORE__AUTH_MANAGER"] == AUTH_MANAGER
    assert env["AIRFLOW__SECRETS__BACKEND"] == SECRETS_BACKEND
    local_kwargs = json.loads(local["AIRFLOW__SECRETS__BACKEND_KWARGS"])
    compose_kwargs = json.loads(env["AIRFLOW__SECRETS__BACKEND_KWARGS"])
    assert compose_kwargs.keys() == local_kwargs.keys()
    for key in ("connections_prefix", "variables_prefix", "config_prefix", "region_name"):
        assert compose_kwargs[key] == local_kwargs[key], key
    assert compose_kwargs["endpoint_url"] == "http://moto:5050"
    local_bundles = json.loads(local["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"])
    compose_bundles = json.loads(env["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"])
    assert [(b["name"], b["classpath"]) for b in compose_bundles] == [
        (b["name"], b["classpath"]) for b in local_bundles
    ]


def test_every_airflow_service_gets_the_same_settings(compose: dict[str, Any]) -> None:
    reference = compose["services"]["scheduler"]["environment"]
    for name in (*AIRFLOW_SERVICES, "airflow-init"):
        env = compose["services"][name]["environment"]
        assert {k: v for k, v in env.items() if k != "CELERY_HOSTNAME"} == reference, name


# --- Helm values (structure only: NOT the chart's values.schema.json) ----------------------------
def test_helm_values_pin_the_chart_and_airflow(helm: dict[str, Any]) -> None:
    text = HELM_VALUES.read_text()
    assert f"--version {CHART_VERSION}" in text
    assert helm["airflowVersion"] == _pinned("apache-airflow")
    assert helm["defaultAirflowTag"] == _pinned("apache-airflow")
    assert helm["images"]["airflow"]["tag"].startswith(_pinned("apache-airflow"))


def test_helm_values_celery_with_keda_and_a_soc_queue(helm: dict[str, Any]) -> None:
    assert helm["executor"] == "CeleryExecutor"  # what the chart's templates key on
    assert helm["config"]["core"]["executor"] == "include.executors.celery.ResumeSafeCeleryExecutor"
    celery = helm["workers"]["celery"]
    assert celery["keda"]["enabled"] is True
    assert celery["keda"]["minReplicaCount"] >= 1  # the fast path never waits for a cold start
    assert helm["config"]["celery"]["worker_concurrency"]  # KEDA's query divides by it
    (soc,) = [s for s in celery["sets"] if s["name"] == "soc"]
    assert "--queues soc" in " ".join(soc["args"])
    assert soc["replicas"] >= 2
    for section in (
        celery,
        soc,
        helm["scheduler"],
        helm["apiServer"],
        helm["triggerer"],
        helm["dagProcessor"],
    ):
        assert section["resources"]["requests"]
        assert section["resources"]["limits"]


def test_helm_values_git_dag_bundle(helm: dict[str, Any]) -> None:
    (bundle,) = helm["dagProcessor"]["dagBundleConfigList"]
    assert bundle["classpath"] == "include.bundles.git.GitOpsDagBundle"
    assert bundle["kwargs"]["tracking_ref"] == "main"
    assert bundle["kwargs"]["subdir"] == "dags"
    assert helm["dags"]["gitSync"]["enabled"] is False
    # The same bundle as the production env file that the GitOps end-to-end test describes.
    env_file = (ROOT / "docker" / "airflow-gitops.env").read_text()
    line = next(
        x for x in env_file.splitlines() if x.startswith("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST=")
    )
    assert json.loads(line.split("=", 1)[1]) == [bundle]


def test_helm_workers_warm_the_platform_modules_of_the_images_dags(helm: dict[str, Any]) -> None:
    """The warm-up (include/executors/warm.py) finds the platform modules to import in
    ``[core] dags_folder``: in Helm that is the image's copy of dags/ (the Git bundle does not use
    it), not the chart's default, which is empty in this image; and that copy's DAG files import
    platform modules, so there is something to warm."""
    from include.executors.warm import platform_imports

    folder = helm["config"]["core"]["dags_folder"]
    copies = re.findall(r"^COPY\b.*\sdags/\s+(\S+?)/?$", DOCKERFILE.read_text(), re.M)
    assert copies == [folder]
    assert any(name.startswith("include.workflows") for name in platform_imports(ROOT / "dags"))


def test_helm_values_auth_secrets_backend_and_irsa(helm: dict[str, Any]) -> None:
    config = helm["config"]
    assert config["core"]["auth_manager"] == AUTH_MANAGER
    assert config["secrets"]["backend"] == SECRETS_BACKEND
    kwargs = json.loads(config["secrets"]["backend_kwargs"])
    assert kwargs == {
        "connections_prefix": "airflow/connections",
        "variables_prefix": "airflow/variables",
        "config_prefix": None,
    }
    accounts = [
        helm[c]["serviceAccount"] for c in ("scheduler", "apiServer", "triggerer", "dagProcessor")
    ] + [helm["workers"]["celery"]["serviceAccount"]]
    for account in accounts:
        assert re.fullmatch(
            r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+", account["annotations"]["eks.amazonaws.com/role-arn"]
        )


def test_helm_values_external_db_and_broker_from_secrets(helm: dict[str, Any]) -> None:
    assert helm["postgresql"]["enabled"] is False
    assert helm["redis"]["enabled"] is False
    for key in ("metadataSecretName", "brokerUrlSecretName", "resultBackendSecretName"):
        assert helm["data"][key]
    assert "metadataConnection" not in helm["data"]
    assert "brokerUrl" not in helm["data"]


def test_helm_values_hold_no_secret_values(helm: dict[str, Any]) -> None:
    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                here = f"{path}.{key}"
                if SECRET_WORDS.search(str(key)) and not str(key).endswith("SecretName"):
                    assert not isinstance(value, str) or not value, here
                walk(value, here)
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}[{i}]")

    walk(helm, "")
    assert "aws_secret_access_key" not in HELM_VALUES.read_text()
