"""deploy/ stays coherent: its YAML parses, every image tag is the package version, the Kafka
address has one place in the Kubernetes manifests, the example Secret holds what both workloads
read, and the Compose override for a secured Kafka uses only the variables it documents. The
configs are loaded as a worker reads them (pipeline.config.load_settings), from the environment
each workload would get."""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

import pipeline
from pipeline.config import Settings, load_settings

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
SECURED = DEPLOY / "compose.secured.yaml"
CONNECTION = K8S / "kafka-connection.yaml"
CREDENTIALS = K8S / "kafka-credentials.example.yaml"
VERSION = pipeline.__version__

#: An image reference: `quota-pipeline:` and a tag (a YAML key `quota-pipeline:` has none).
IMAGE = re.compile(r"(?<![\w/.-])quota-pipeline:([^\s\"'`,;)\]]+)")
#: Compose interpolation: ${NAME}, ${NAME:-default}, ${NAME:?error}.
VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?::(?P<op>[?-])(?P<arg>[^}]*))?\}")
#: A commented-out variable of the connection ConfigMap: "  # QP_KAFKA__NAME: value".
COMMENTED = re.compile(r"^(?P<indent>\s+)# (?P<name>QP_KAFKA\w*): (?P<value>\S+)$", re.MULTILINE)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the shell running the tests exports, each test starts with no QP_ variable."""
    for name in list(os.environ):
        if name.startswith("QP_"):
            monkeypatch.delenv(name)


# --- reading -----------------------------------------------------------------------------------


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping, as kubectl and Compose do
    (PyYAML would keep the last one silently). Merge keys (<<) may be repeated."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


@dataclass(frozen=True)
class Tagged:
    """A value under one of Compose's merge tags, !reset or !override."""

    tag: str
    value: Any


class ComposeLoader(StrictLoader):
    """StrictLoader plus Compose's merge tags; only for Compose files."""


def _compose_tag(loader: yaml.SafeLoader, node: yaml.Node) -> Tagged:
    value: Any
    if isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.ScalarNode)
        value = loader.construct_scalar(node)
    return Tagged(node.tag.removeprefix("!"), value)


for _tag in ("!reset", "!override"):
    ComposeLoader.add_constructor(_tag, _compose_tag)


def load_yaml(path: Path) -> list[Any]:
    loader = ComposeLoader if path.name.startswith("compose") else StrictLoader
    return list(yaml.load_all(path.read_text(encoding="utf-8"), Loader=loader))


def deploy_files() -> list[Path]:
    """Every file of deploy/, leaving out hidden folders (the local broker's cache and data)."""
    found = []
    for folder, dirs, files in os.walk(DEPLOY):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(folder) / name for name in sorted(files)]
    return found


def yaml_files() -> list[Path]:
    return [path for path in deploy_files() if path.suffix in {".yaml", ".yml"}]


def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """The Kubernetes objects of deploy/k8s by (kind, name), the example Secret included."""
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_yaml(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in objects, f"{key} twice"
            objects[key] = doc
    return objects


def connection_map() -> dict[str, Any]:
    (doc,) = load_yaml(CONNECTION)
    assert doc["kind"] == "ConfigMap"
    return doc


def credentials() -> dict[str, Any]:
    (doc,) = load_yaml(CREDENTIALS)
    assert doc["kind"] == "Secret"
    return doc


def workloads() -> dict[str, dict[str, Any]]:
    """The one container of each workload (the StatefulSet's worker, the Job's topics), with
    the pod's volumes under "volumes"."""
    found = {}
    for (kind, _), doc in manifests().items():
        if kind in {"StatefulSet", "Job"}:
            pod = doc["spec"]["template"]["spec"]
            (container,) = pod["containers"]
            found[kind] = {**container, "volumes": pod.get("volumes", [])}
    assert set(found) == {"StatefulSet", "Job"}
    return found


def mount_of(container: dict[str, Any], volume: str) -> str:
    (path,) = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume]
    return str(path)


def container_env(
    container: dict[str, Any], connection: dict[str, str], secret: dict[str, str] | None
) -> dict[str, str]:
    """The QP_ environment Kubernetes gives the container: the ConfigMaps of envFrom, then its
    env (values, and secretKeyRefs resolved from ``secret``, or left out without it)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert source["configMapRef"]["name"] == connection_map()["metadata"]["name"]
        env.update(connection)
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif "secretKeyRef" in entry["valueFrom"]:
            ref = entry["valueFrom"]["secretKeyRef"]
            if secret is not None and ref["key"] in secret:
                env[entry["name"]] = secret[ref["key"]]
    return {name: value for name, value in env.items() if name.startswith("QP_")}


def set_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """Exactly ``env`` as the QP_ environment (nothing left from another container)."""
    for name in list(os.environ):
        if name.startswith("QP_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))


def kubernetes_config(tmp_path: Path, container: dict[str, Any]) -> Path:
    """The ConfigMap's config.json written where the test can read it; checks that QP_CONFIG
    names the file where the container mounts it."""
    (config_map,) = [
        doc
        for (kind, name), doc in manifests().items()
        if kind == "ConfigMap" and name == "quota-pipeline-config"
    ]
    qp_config = next(e["value"] for e in container["env"] if e["name"] == "QP_CONFIG")
    assert qp_config == f"{mount_of(container, 'config')}/config.json"
    path = tmp_path / "config.json"
    path.write_text(config_map["data"]["config.json"], encoding="utf-8")
    return path


# --- every file --------------------------------------------------------------------------------


def test_the_deploy_yaml_files_are_the_expected_ones() -> None:
    names = {str(path.relative_to(DEPLOY)) for path in yaml_files()}
    assert names >= {
        "compose.yaml",
        "compose.secured.yaml",
        "k8s/configmap.yaml",
        "k8s/kafka-connection.yaml",
        "k8s/kafka-credentials.example.yaml",
        "k8s/kustomization.yaml",
        "k8s/statefulset.yaml",
        "k8s/topics-job.yaml",
    }


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path: Path) -> None:
    docs = load_yaml(path)
    assert docs
    assert all(isinstance(doc, dict) and doc for doc in docs)
    if path.parent == K8S:
        assert all(doc["apiVersion"] and doc["kind"] for doc in docs)
    else:
        assert all("services" in doc for doc in docs)


def test_kubernetes_manifests_hold_no_compose_tags() -> None:
    with pytest.raises(yaml.constructor.ConstructorError):
        list(yaml.load_all("a: !reset {}", Loader=StrictLoader))
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key"):
        list(yaml.load_all("a: 1\na: 2\n", Loader=StrictLoader))


def test_every_image_reference_carries_the_package_version() -> None:
    found: dict[str, set[str]] = {}
    for path in deploy_files():
        for tag in IMAGE.findall(path.read_text(encoding="utf-8", errors="replace")):
            found.setdefault(str(path.relative_to(DEPLOY)), set()).add(tag)
    assert set(found) >= {
        "Dockerfile",
        "README.md",
        "compose.yaml",
        "k8s/statefulset.yaml",
        "k8s/topics-job.yaml",
    }
    assert {name: tags for name, tags in found.items() if tags != {VERSION}} == {}


def test_the_package_version_is_one() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["version"] == VERSION


def test_the_image_version_label_defaults_to_the_package_version() -> None:
    lines = (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines()
    froms = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    # The default once, before the first stage; each stage that uses it declares it.
    assert [line for line in lines if line.startswith("ARG VERSION=")] == [f"ARG VERSION={VERSION}"]
    assert lines.index(f"ARG VERSION={VERSION}") < froms[0]
    final_stage = lines[froms[-1] :]
    assert "ARG VERSION" in final_stage
    label = "\n".join(final_stage[final_stage.index("ARG VERSION") :])
    assert 'org.opencontainers.image.version="$VERSION"' in label

    (compose,) = load_yaml(COMPOSE)
    for name in ("topics", "worker"):
        service = compose["services"][name]
        assert service["image"] == f"quota-pipeline:{VERSION}"
        assert service["build"]["args"] == {"VERSION": VERSION}

    (kustomization,) = load_yaml(K8S / "kustomization.yaml")
    assert kustomization["images"] == [{"name": "quota-pipeline", "newTag": VERSION}]


# --- Kubernetes: one place for the Kafka connection ----------------------------------------------


def test_the_kafka_address_has_one_place_in_kubernetes() -> None:
    bootstrap = connection_map()["data"]["QP_KAFKA_BOOTSTRAP"]
    assert bootstrap
    places = {
        path.name: path.read_text(encoding="utf-8").count(bootstrap)
        for path in sorted(K8S.iterdir())
    }
    assert {name: count for name, count in places.items() if count} == {"kafka-connection.yaml": 1}

    # Nothing else sets a Kafka setting: no `kafka` section in config.json, no QP_KAFKA
    # variable in a workload but the SASL user and password of the Secret.
    config_map = manifests()[("ConfigMap", "quota-pipeline-config")]
    assert "kafka" not in json.loads(config_map["data"]["config.json"])
    for kind, container in workloads().items():
        assert container["envFrom"] == [
            {"configMapRef": {"name": connection_map()["metadata"]["name"]}}
        ], kind
        kafka_env = {e["name"] for e in container["env"] if e["name"].startswith("QP_KAFKA")}
        assert kafka_env == {"QP_KAFKA__SASL_USERNAME", "QP_KAFKA__SASL_PASSWORD"}, kind


def test_kustomize_applies_every_manifest_but_the_example_secret() -> None:
    (kustomization,) = load_yaml(K8S / "kustomization.yaml")
    manifest_files = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifest_files - {CREDENTIALS.name}


def test_the_kubernetes_config_loads_as_a_worker_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plaintext, as the manifests stand: no Secret, so no SASL user and no CA file."""
    connection = connection_map()["data"]
    for kind, container in workloads().items():
        env = container_env(container, connection, secret=None)
        env["QP_CONFIG"] = str(kubernetes_config(tmp_path, container))
        set_env(monkeypatch, env)
        settings = load_settings()
        assert settings.kafka.bootstrap_servers == connection["QP_KAFKA_BOOTSTRAP"], kind
        assert settings.kafka.security_protocol == "PLAINTEXT", kind
        assert settings.kafka.replication_factor == int(connection["QP_KAFKA__REPLICATION_FACTOR"])
        assert settings.kafka.sasl_username is None
        assert settings.monitor.enable_trigger_monitors


# --- Kubernetes: the credentials Secret ----------------------------------------------------------


def secured_connection() -> dict[str, str]:
    """The connection ConfigMap with its commented-out (secured) lines uncommented."""
    text = CONNECTION.read_text(encoding="utf-8")
    commented = COMMENTED.findall(text)
    assert commented, "no commented-out QP_KAFKA lines to uncomment"
    uncommented = COMMENTED.sub(r"\g<indent>\g<name>: \g<value>", text)
    (doc,) = yaml.load_all(uncommented, Loader=StrictLoader)  # refuses a key twice
    return dict(doc["data"])


def test_the_secret_example_has_the_keys_both_workloads_read() -> None:
    secret = credentials()
    name = secret["metadata"]["name"]
    keys = set(secret["stringData"])
    assert keys == {"sasl-username", "sasl-password", "ca.pem"}
    ca_file = secured_connection()["QP_KAFKA__SSL_CAFILE"]

    for kind, container in workloads().items():
        refs = {
            entry["name"]: entry["valueFrom"]["secretKeyRef"]
            for entry in container["env"]
            if "secretKeyRef" in entry.get("valueFrom", {})
        }
        assert {var: ref["key"] for var, ref in refs.items()} == {
            "QP_KAFKA__SASL_USERNAME": "sasl-username",
            "QP_KAFKA__SASL_PASSWORD": "sasl-password",
        }, kind
        assert all(ref["name"] == name and ref["optional"] is True for ref in refs.values())

        (volume,) = [v for v in container["volumes"] if "secret" in v]
        assert volume["secret"]["secretName"] == name, kind
        assert volume["secret"]["optional"] is True, kind
        # Only the CA is mounted, not the user and password.
        assert volume["secret"]["items"] == [{"key": "ca.pem", "path": "ca.pem"}], kind
        mounted = {
            f"{mount_of(container, volume['name'])}/{item['path']}"
            for item in volume["secret"]["items"]
        }
        assert mounted == {ca_file}, kind
        assert {ref["key"] for ref in refs.values()} | {"ca.pem"} == keys


def test_the_secret_example_holds_placeholders_only() -> None:
    secret = credentials()
    assert "data" not in secret  # base64 values could hide real ones
    assert "EXAMPLE" in CREDENTIALS.read_text(encoding="utf-8").splitlines()[0]
    for key, value in secret["stringData"].items():
        assert "REPLACE_ME" in value, key
        # Nothing that looks like a real certificate body or key material.
        assert not re.search(r"[A-Za-z0-9+/=]{40,}", value), key
        assert "PRIVATE KEY" not in value, key


def test_the_secured_kubernetes_config_loads_with_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = secured_connection()
    secret = credentials()["stringData"]
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(secret["ca.pem"], encoding="utf-8")
    for kind, container in workloads().items():
        env = container_env(container, connection, secret=secret)
        env["QP_CONFIG"] = str(kubernetes_config(tmp_path, container))
        env["QP_KAFKA__SSL_CAFILE"] = str(ca_file)  # the mount path, checked above
        set_env(monkeypatch, env)
        kafka = load_settings().kafka
        assert kafka.security_protocol == "SASL_SSL", kind
        assert kafka.sasl_mechanism == "SCRAM-SHA-512", kind
        assert kafka.sasl_username == secret["sasl-username"], kind
        assert kafka.sasl_password is not None
        assert kafka.sasl_password.get_secret_value() == secret["sasl-password"], kind
        assert kafka.ssl_cafile == ca_file, kind


# --- Compose: the secured override --------------------------------------------------------------


def interpolate(value: Any, variables: dict[str, str]) -> Any:
    """Compose's interpolation of every string in ``value``; LookupError for a variable that is
    unset (or empty) without a default, with the error text of ${NAME:?text}."""

    def replace(match: re.Match[str]) -> str:
        if given := variables.get(match["name"]):
            return given
        if match["op"] == "-":
            return match["arg"]
        raise LookupError(match["arg"] or match["name"])

    if isinstance(value, str):
        return VARIABLE.sub(replace, value)
    if isinstance(value, dict):
        return {key: interpolate(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, variables) for item in value]
    if isinstance(value, Tagged):
        return Tagged(value.tag, interpolate(value.value, variables))
    return value


def documented_variables() -> dict[str, str]:
    """The variables the override's header documents, each "required" or "optional"."""
    header = re.findall(
        r"^#\s+([A-Z][A-Z0-9_]+)\s+(required|optional):", SECURED.read_text(encoding="utf-8"), re.M
    )
    return dict(header)


SHELL = {
    "KAFKA_BOOTSTRAP": "broker-1.example.com:9096,broker-2.example.com:9096",
    "KAFKA_USERNAME": "quota",
    "KAFKA_PASSWORD": "s3cret-password",
    "KAFKA_CA_FILE": "/home/someone/ca.pem",
}


def test_the_secured_override_uses_only_the_variables_it_documents() -> None:
    text = "\n".join(
        line
        for line in SECURED.read_text(encoding="utf-8").splitlines()
        if not line.lstrip().startswith("#")
    )
    used = {match["name"]: match["op"] for match in VARIABLE.finditer(text)}
    documented = documented_variables()
    assert used
    assert set(used) == set(documented)
    # A required variable stops Compose when missing (${NAME:?...}); an optional one has a
    # default (${NAME:-...}); none is a bare ${NAME}, which would become "" silently.
    assert used == {name: "?" if kind == "required" else "-" for name, kind in documented.items()}
    assert set(SHELL) == {name for name, kind in documented.items() if kind == "required"}

    (override,) = load_yaml(SECURED)
    for name in SHELL:
        with pytest.raises(LookupError):
            interpolate(override, {k: v for k, v in SHELL.items() if k != name})


def test_the_secured_override_drops_the_bundled_broker() -> None:
    (base,) = load_yaml(COMPOSE)
    (override,) = load_yaml(SECURED)
    services = override["services"]
    assert services["kafka"]["profiles"]
    # Whatever depended on the bundled broker no longer does.
    for name, service in base["services"].items():
        if "kafka" in service.get("depends_on", {}):
            assert services[name]["depends_on"] == Tagged("reset", {}), name
    assert set(services) == set(base["services"])


def test_the_secured_override_connects_topics_and_worker_to_a_secured_kafka(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (base,) = load_yaml(COMPOSE)
    (override,) = load_yaml(SECURED)
    override = interpolate(override, SHELL)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    for name in ("topics", "worker"):
        env = {**base["services"][name]["environment"], **override["services"][name]["environment"]}
        # The CA file is the shell's KAFKA_CA_FILE, mounted read-only where QP_KAFKA__SSL_CAFILE
        # says; the config file is the one compose.yaml mounts where QP_CONFIG says.
        assert (
            f"{SHELL['KAFKA_CA_FILE']}:{env['QP_KAFKA__SSL_CAFILE']}:ro"
            in (override["services"][name]["volumes"])
        )
        assert f"./config.example.json:{env['QP_CONFIG']}:ro" in base["services"][name]["volumes"]
        env["QP_KAFKA__SSL_CAFILE"] = str(ca_file)
        env["QP_CONFIG"] = str(DEPLOY / "config.example.json")
        set_env(monkeypatch, env)
        kafka = load_settings().kafka
        assert kafka.bootstrap_servers == SHELL["KAFKA_BOOTSTRAP"], name
        assert kafka.security_protocol == "SASL_SSL", name
        assert kafka.sasl_mechanism == "SCRAM-SHA-512", name
        assert kafka.sasl_username == SHELL["KAFKA_USERNAME"], name
        assert kafka.sasl_password is not None
        assert kafka.sasl_password.get_secret_value() == SHELL["KAFKA_PASSWORD"], name
        assert kafka.ssl_cafile == ca_file, name
        assert kafka.replication_factor == 3, name


# --- the example config ------------------------------------------------------------------------


def test_the_example_config_loads() -> None:
    data = json.loads((DEPLOY / "config.example.json").read_text(encoding="utf-8"))
    settings = Settings.model_validate(data)
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert settings.monitor.enable_trigger_monitors


EXAMPLES = DEPLOY / "examples"


def test_the_gateway_examples_feed_the_matching_config() -> None:
    settings = load_settings(str(EXAMPLES / "quota-pipeline.json"))
    tyk = json.loads((EXAMPLES / "tyk.conf").read_text())
    pump = json.loads((EXAMPLES / "pump.conf").read_text())["pumps"]["kafka"]
    apisix = json.loads((EXAMPLES / "apisix-kafka-logger.json").read_text())
    tyk_source, apisix_source = settings.ingest.sources
    assert (tyk_source.format, tyk_source.topic) == ("tyk-pump", pump["meta"]["topic"])
    assert pump["type"] == "kafka"
    logger = apisix["plugins"]["kafka-logger"]
    assert (apisix_source.format, apisix_source.topic) == (
        "apisix-kafka-logger",
        logger["kafka_topic"],
    )
    assert logger["meta_format"] == "default"
    # The monitor is Tyk's section as it is; hashed keys are listed for `sessions sync`.
    assert (
        settings.monitor.model_dump()
        == Settings.model_validate({"monitor": tyk["monitor"]}).monitor.model_dump()
    )
    assert tyk["hash_keys"]
    assert tyk["enable_hashed_keys_listing"]
    assert settings.tyk.hashed_keys
    assert settings.tyk.gateway_url is not None
    assert settings.tyk.gateway_url.endswith(f":{tyk['listen_port']}")
    assert settings.tyk.gateway_secret is None, "the secret goes in QP_TYK__GATEWAY_SECRET"
