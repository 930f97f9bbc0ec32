"""The deploy/ layouts pass only settings carecoord reads and run only commands it has."""

from __future__ import annotations

import difflib
import json
import re
import shlex
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from pydantic import SecretStr
from typer.main import get_command

from services.cli import app
from services.common import db
from services.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PREFIX = str(Settings.model_config.get("env_prefix", "")).upper()
KNOWN = frozenset(f"{PREFIX}{field}".upper() for field in Settings.model_fields)
# Settings that must only ever come from a secret store: the SecretStr fields, and the
# database URLs, which carry the login roles' passwords.
DATABASE_URL = f"{PREFIX}DATABASE_URL"
MIGRATE_URL = f"{PREFIX}MIGRATE_DATABASE_URL"
SIGNING_KEY = f"{PREFIX}AUDIT_SIGNING_KEY"
PUBLIC_KEY = f"{PREFIX}AUDIT_PUBLIC_KEY"
SECRETS = frozenset(
    f"{PREFIX}{name}".upper()
    for name, field in Settings.model_fields.items()
    if SecretStr in (typing.get_args(field.annotation) or (field.annotation,))
) | {DATABASE_URL, MIGRATE_URL}
# Each service that talks to Kafka has its own principal, so its password comes from a
# secret of its own, not from the shared one.
KAFKA_USER = f"{PREFIX}KAFKA_SASL_USERNAME"
KAFKA_PASSWORD = f"{PREFIX}KAFKA_SASL_PASSWORD"
KAFKA_CLIENTS = ("api", "worker", "relay")
API_PORT_NAME = f"{PREFIX}API_PORT"
PARTITIONS_NAME = f"{PREFIX}TOPIC_PARTITIONS"
_MENTION = re.compile(rf"\b{PREFIX}[A-Z0-9_]+\b")
Found = dict[str, set[str]]


def _add(found: Found, name: object, where: str) -> None:
    if str(name).upper().startswith(PREFIX):
        found.setdefault(str(name), set()).add(where)


def _sweep(node: Any, where: str, found: Found) -> None:
    """Names mentioned anywhere else (a shell script, a file path) count too."""
    for name in set(_MENTION.findall(json.dumps(node, default=str))) - set(found):
        _add(found, name, f"{where}: text")


def environment(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A compose service's `environment`, written as a map or as KEY=VALUE lines."""
    env = spec.get("environment") or {}
    if isinstance(env, Mapping):
        return dict(env)
    return {k: (v if sep else None) for k, sep, v in (str(i).partition("=") for i in env)}


def compose_names(doc: Mapping[str, Any], where: str = "compose.yaml") -> Found:
    found: Found = {}
    for service, spec in (doc.get("services") or {}).items():
        for key in environment(spec):
            _add(found, key, f"{where}: services.{service}.environment")
        # The secrets entrypoint exports each mounted CARECOORD_* file as a variable.
        for secret in spec.get("secrets") or []:
            name = secret if isinstance(secret, str) else secret.get("target", secret["source"])
            _add(found, name, f"{where}: services.{service}.secrets")
    for name in doc.get("secrets") or {}:
        _add(found, name, f"{where}: secrets")
    _sweep(doc, where, found)
    return found


def pod_specs(docs: Sequence[tuple[str, Any]]) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(where, workload, pod spec) of every workload in the manifests."""
    for where, doc in docs:
        if doc.get("kind") in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            yield where, doc, doc["spec"]["template"]["spec"]
        elif doc.get("kind") == "CronJob":
            yield where, doc, doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def containers(docs: Sequence[tuple[str, Any]]) -> Iterator[tuple[str, dict[str, Any], Any]]:
    for where, doc, pod in pod_specs(docs):
        for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            yield f"{where}: {doc['kind']}/{doc['metadata']['name']}", doc, container


def maps(docs: Sequence[tuple[str, Any]]) -> dict[tuple[str, str], set[str]]:
    """The keys of every ConfigMap and Secret, by (kind, name)."""
    return {
        (doc["kind"], doc["metadata"]["name"]): {
            *(doc.get("data") or {}),
            *(doc.get("stringData") or {}),
            *(doc.get("binaryData") or {}),
        }
        for _, doc in docs
        if doc.get("kind") in {"ConfigMap", "Secret"}
    }


def k8s_names(docs: Sequence[tuple[str, Any]]) -> Found:
    found: Found = {}
    keys = maps(docs)
    for (kind, name), names in keys.items():
        for key in names:
            _add(found, key, f"{kind}/{name}")
    for where, _, container in containers(docs):
        for item in container.get("env") or []:
            _add(found, item["name"], f"{where} env")
        for source in container.get("envFrom") or []:
            for ref, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                if ref in source:
                    for key in keys.get((kind, source[ref]["name"]), set()):
                        _add(found, key, f"{where} envFrom {kind}/{source[ref]['name']}")
    for where, doc in docs:
        _sweep(doc, where, found)
    return found


def unknown_settings(found: Found) -> list[str]:
    """What is wrong with each name that is not a setting carecoord reads."""
    problems = []
    for name in sorted(found):
        if name.upper() not in KNOWN:
            near = difflib.get_close_matches(name.upper(), KNOWN, n=1)
            hint = f"; did you mean {near[0]}?" if near else ""
            where = ", ".join(sorted(found[name]))
            problems.append(f"{name} ({where}) is not a setting carecoord reads{hint}")
    return problems


def command_problem(argv: Sequence[str]) -> str | None:
    """None when `carecoord <argv>` names a real command (hidden ones too) and parses."""
    command: Any = get_command(app)
    args, path = list(argv), ["carecoord"]
    # Typer vendors its own click: a group is whatever has subcommands.
    while isinstance(getattr(command, "commands", None), dict):
        if not args or args[0].startswith("-"):
            return f"`{' '.join(path)}` needs one of {', '.join(sorted(command.commands))}"
        path.append(args.pop(0))
        command = command.commands.get(path[-1])
        if command is None:
            return f"`{' '.join(path)}`: no such command"
    try:
        command.make_context(" ".join(path), args)
    except typer.TyperException as exc:
        return f"`{' '.join([*path, *args])}`: {exc.format_message()}"
    return None


def container_argv(container: Mapping[str, Any]) -> list[str] | None:
    """What a container runs after `carecoord`; None when it does not run carecoord."""
    command, args = container.get("command"), [str(a) for a in container.get("args") or []]
    if command:
        return [*map(str, command[1:]), *args] if command[0] == "carecoord" else None
    return args if "carecoord" in str(container.get("image", "")) else None


def readme_argvs(text: str) -> Iterator[list[str]]:
    """Each `carecoord …` (or compose `run … <service> …`) in the README's sh blocks."""
    for block in re.findall(r"^```sh\n(.*?)^```", text, re.DOTALL | re.MULTILINE):
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r"\||&&|;|\$\(|\)|\s#|[0-9]?>", line):
                try:
                    words = shlex.split(part)
                except ValueError:  # a quote opened before a `$(` split
                    words = part.split()
                for i, word in enumerate(words):
                    if (word == "carecoord" or word.endswith("/bin/carecoord")) and (
                        i == 0 or words[i - 1] not in {"-n", "--namespace"}
                    ):
                        yield words[i + 1 :]
                if "compose" in words and "run" in words:
                    rest = words[words.index("run") + 1 :]
                    while rest and rest[0].startswith("-"):
                        rest.pop(0)
                    yield rest[1:]


def dockerfile() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    lines = (line.strip() for line in text.splitlines())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def dockerfile_env() -> dict[str, str]:
    words = [w for op, rest in dockerfile() if op == "ENV" for w in shlex.split(rest)]
    return dict(w.split("=", 1) for w in words)


def env_example() -> dict[str, str]:
    """KEY=value lines of deploy/.env.example, commented-out ones too (they get uncommented)."""
    path = DEPLOY / ".env.example"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return dict(re.findall(r"^[ \t]*#?[ \t]*([A-Z][A-Z0-9_]*)=(.*)$", text, re.MULTILINE))


COMPOSE: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
K8S: list[tuple[str, Any]] = [
    (path.name, doc)
    for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
    for doc in yaml.safe_load_all(path.read_text(encoding="utf-8"))
    if doc
]
CONFIG = next(d["data"] for _, d in K8S if d["kind"] == "ConfigMap")


def workload(argv: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Deployment (or Job) whose container runs `carecoord <argv>`, and that container."""
    found = [(doc, c) for _, doc, c in containers(K8S) if container_argv(c) == argv]
    assert len(found) == 1, f"expected one workload running carecoord {argv}, found {found}"
    return found[0]


def test_every_carecoord_variable_the_layouts_pass_is_a_setting_the_app_reads() -> None:
    found = compose_names(COMPOSE)
    for name, where in k8s_names(K8S).items():
        found.setdefault(name, set()).update(where)
    for name in [*dockerfile_env(), *env_example()]:
        _add(found, name, "Dockerfile or .env.example")
    assert {f"{PREFIX}JWT_SECRET", f"{PREFIX}AUDIT_KEYS", PARTITIONS_NAME} <= set(found)
    assert unknown_settings(found) == []


def test_a_misspelled_setting_is_reported_with_the_name_it_resembles() -> None:
    compose = {"services": {"api": {"environment": ["CARECOORD_JWT_SECERT=x"]}}}
    assert unknown_settings(compose_names(compose)) == [
        "CARECOORD_JWT_SECERT (compose.yaml: services.api.environment) is not a setting "
        "carecoord reads; did you mean CARECOORD_JWT_SECRET?"
    ]
    secret = {
        "kind": "Secret",
        "metadata": {"name": "s"},
        "stringData": {"CARECOORD_JWT_SECERT": ""},
    }
    pod = {"containers": [{"name": "api", "envFrom": [{"secretRef": {"name": "s"}}]}]}
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {"template": {"spec": pod}},
    }
    [problem] = unknown_settings(k8s_names([("a.yaml", secret), ("b.yaml", deployment)]))
    assert "Secret/s" in problem and "envFrom Secret/s" in problem
    assert problem.endswith("did you mean CARECOORD_JWT_SECRET?")


def test_every_carecoord_invocation_names_a_real_command() -> None:
    argvs = [(f"k8s {where}", container_argv(c)) for where, _, c in containers(K8S)]
    for service, spec in COMPOSE["services"].items():
        if "carecoord" in str(spec.get("image", "")):
            argvs.append((f"compose {service}", [str(a) for a in spec.get("command") or []]))
            # The secrets entrypoint must hand its arguments on to carecoord.
            entrypoint = spec.get("entrypoint") or ["carecoord"]
            assert entrypoint[-1] == "carecoord", service
            assert len(entrypoint) == 1 or 'exec carecoord "$$@"' in entrypoint[-2], service
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    argvs += [("deploy/README.md", argv) for argv in readme_argvs(readme)]
    problems = [
        f"{where}: {p}"
        for where, argv in argvs
        if argv is not None and (p := command_problem(argv))
    ]
    assert problems == []
    assert {"migrate", "api", "worker", "relay"} <= {a[0] for _, a in argvs if a}
    assert (
        command_problem(["audit", "rotate-keys"])
        == "`carecoord audit rotate-keys`: no such command"
    )
    assert "No such option" in str(command_problem(["migrate", "--dry-run"]))


def _port(container: Mapping[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(int(p["containerPort"]) for p in container["ports"] if p.get("name") == port)


def test_the_api_is_ready_on_healthz_at_the_port_it_listens_on() -> None:
    port = int(CONFIG.get(API_PORT_NAME, Settings.model_fields["api_port"].default))
    _, api = workload(["api"])
    assert [p["containerPort"] for p in api["ports"]] == [port]
    ready = api["readinessProbe"]["httpGet"]
    assert ready["path"] == "/healthz" and _port(api, ready["port"]) == port
    # /healthz is 503 while PostgreSQL or Kafka is away: as liveness it would restart-loop.
    assert api["livenessProbe"].get("httpGet", {}).get("path") != "/healthz"
    service = next(d for _, d in K8S if d["kind"] == "Service")
    assert [_port(api, p["targetPort"]) for p in service["spec"]["ports"]] == [port]
    compose_api = COMPOSE["services"]["api"]
    compose_port = environment(compose_api)[API_PORT_NAME]
    assert f"127.0.0.1:{compose_port}/healthz" in " ".join(compose_api["healthcheck"]["test"])
    nginx = (DEPLOY / "nginx.conf").read_text(encoding="utf-8")
    assert re.findall(r"server\s+api:(\d+)", nginx) == [str(compose_port)]
    assert dockerfile_env()[API_PORT_NAME] == str(port) and ("EXPOSE", str(port)) in dockerfile()


def test_disruption_budgets_and_services_select_pods_a_deployment_has() -> None:
    labels = [
        d["spec"]["template"]["metadata"]["labels"] for _, d in K8S if d["kind"] == "Deployment"
    ]
    selectors = [
        d["spec"]["selector"]["matchLabels"] for _, d in K8S if d["kind"] == "PodDisruptionBudget"
    ]
    assert len(selectors) >= 2
    selectors += [d["spec"]["selector"] for _, d in K8S if d["kind"] == "Service"]
    for selector in selectors:
        assert any(selector.items() <= pod.items() for pod in labels), selector


def test_the_workers_are_as_many_as_the_partitions_of_care_events() -> None:
    worker, _ = workload(["worker"])
    assert worker["spec"]["replicas"] == int(CONFIG[PARTITIONS_NAME])
    compose_worker = COMPOSE["services"]["worker"]
    assert compose_worker["deploy"]["replicas"] <= int(environment(compose_worker)[PARTITIONS_NAME])


def test_exactly_one_relay_runs_since_the_outbox_takes_no_lock() -> None:
    relay, _ = workload(["relay"])
    assert relay["spec"]["replicas"] == 1 and relay["spec"]["strategy"]["type"] == "Recreate"
    assert COMPOSE["services"]["relay"]["deploy"]["replicas"] == 1


def test_secrets_get_values_only_from_a_secret_store() -> None:
    given = {
        *(
            k
            for s in COMPOSE["services"].values()
            for k, v in environment(s).items()
            if v is not None
        ),
        *CONFIG,
        *(e["name"] for _, _, c in containers(K8S) for e in c.get("env") or [] if "value" in e),
        *dockerfile_env(),
        *(k for k, v in env_example().items() if v.strip()),
    }
    assert given & SECRETS == set()
    template = next(d for _, d in K8S if d["kind"] == "Secret")
    assert set(template["stringData"]) == SECRETS - {KAFKA_PASSWORD}
    assert all("PLACEHOLDER" in value for value in template["stringData"].values())
    kustomization = next(d for _, d in K8S if d.get("kind") == "Kustomization")
    others = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == others - {"secret.template.yaml"}


def test_the_image_runs_carecoord_as_an_unprivileged_user_without_dev_extras() -> None:
    instructions = dockerfile()
    assert {rest.split()[0] for op, rest in instructions if op == "FROM"} == {"python:3.11-slim"}
    assert [op for op, _ in instructions].count("FROM") >= 2
    user = [rest for op, rest in instructions if op == "USER"][-1]
    assert user.split(":")[0] not in {"root", "0"}
    assert [json.loads(rest) for op, rest in instructions if op == "ENTRYPOINT"] == [["carecoord"]]
    assert dockerfile_env()[f"{PREFIX}API_HOST"] == "0.0.0.0"
    installs = " ".join(rest for op, rest in instructions if op == "RUN" and "pip install" in rest)
    assert "[" not in installs and "-e " not in installs
    # The installed package finds its migrations only where the image puts them.
    [copied] = [
        rest.split()[1] for op, rest in instructions if rest.startswith("deploy/migrations")
    ]
    assert dockerfile_env()[f"{PREFIX}MIGRATIONS_DIR"] == copied


async def test_migrating_from_a_folder_without_migrations_is_refused_before_touching_the_database(
    tmp_path: Path,
) -> None:
    # No pool is needed: the folder is looked at first, and an empty one is an error.
    with pytest.raises(db.MigrationError, match="CARECOORD_MIGRATIONS_DIR"):
        await db.migrate(None, tmp_path)  # type: ignore[arg-type]


def _secret_ref(container: Mapping[str, Any], name: str) -> tuple[str, str] | None:
    for item in container.get("env") or []:
        if item["name"] == name and "secretKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["secretKeyRef"]
            return ref["name"], ref["key"]
    return None


def test_each_service_that_talks_to_kafka_has_its_own_principal_and_migrate_has_none() -> None:
    templates = {d["metadata"]["name"]: d for _, d in K8S if d["kind"] == "Secret"}
    kafka_maps = [d for _, d in K8S if d["kind"] == "ConfigMap"]
    [kafka_config] = [
        d["data"] for d in kafka_maps if f"{PREFIX}KAFKA_SECURITY_PROTOCOL" in d["data"]
    ]
    kafka_map = next(d["metadata"]["name"] for d in kafka_maps if d["data"] is kafka_config)
    cafile = kafka_config[f"{PREFIX}KAFKA_SSL_CAFILE"]
    # The production layout is SCRAM over TLS, and its values are ones the settings accept.
    given = {k.removeprefix(PREFIX).lower(): v for k, v in kafka_config.items()}
    given.pop("kafka_ssl_cafile")
    checked = Settings(**given, kafka_sasl_username="u", kafka_sasl_password="p")
    assert checked.kafka_security_protocol == "SASL_SSL"
    assert checked.kafka_sasl_mechanism.startswith("SCRAM")

    users, passwords = set(), set()
    for component in KAFKA_CLIENTS:
        doc, container = workload([component])
        maps_used = {s["configMapRef"]["name"] for s in container.get("envFrom") or []}
        assert kafka_map in maps_used, component
        [user] = [e["value"] for e in container["env"] if e["name"] == KAFKA_USER]
        ref = _secret_ref(container, KAFKA_PASSWORD)
        assert ref is not None, component
        assert ref[1] in templates[ref[0]]["stringData"], ref
        users.add(user)
        passwords.add(ref)
        # The CA file is on a volume made from the CA Secret the template declares.
        volumes = {v["name"]: v for v in doc["spec"]["template"]["spec"]["volumes"]}
        [mount] = [m for m in container["volumeMounts"] if cafile.startswith(m["mountPath"] + "/")]
        secret = volumes[mount["name"]]["secret"]
        assert secret["secretName"] in templates and mount.get("readOnly") is True
    assert len(users) == len(passwords) == len(KAFKA_CLIENTS)

    _, migrate = workload(["migrate"])
    assert kafka_map not in {s["configMapRef"]["name"] for s in migrate.get("envFrom") or []}
    assert not {e["name"] for e in migrate.get("env") or []} & {KAFKA_USER, KAFKA_PASSWORD}

    sources = set()
    for component in KAFKA_CLIENTS:
        spec = COMPOSE["services"][component]
        env = environment(spec)
        assert {KAFKA_USER, f"{PREFIX}KAFKA_SECURITY_PROTOCOL", f"{PREFIX}KAFKA_SSL_CAFILE"} <= set(
            env
        ), component
        [source] = [
            s["source"]
            for s in spec["secrets"]
            if isinstance(s, dict) and s.get("target") == KAFKA_PASSWORD
        ]
        sources.add(source)
    assert len(sources) == len(KAFKA_CLIENTS)
    migrate_env = environment(COMPOSE["services"]["migrate"])
    assert not {k for k in migrate_env if "SASL" in k or "SECURITY" in k}


def compose_carecoord_names(service: str) -> set[str]:
    """The CARECOORD_* settings a compose service is given (environment and secrets)."""
    spec = COMPOSE["services"][service]
    secrets = {s if isinstance(s, str) else s.get("target", s["source"]) for s in spec["secrets"]}
    return {n for n in {*environment(spec), *secrets} if n.startswith(PREFIX)}


def k8s_carecoord_names(argv: list[str]) -> set[str]:
    _, container = workload(argv)
    names = {e["name"] for e in container.get("env") or []}
    if any("configMapRef" in source for source in container.get("envFrom") or []):
        names |= set(CONFIG)
    return {n for n in names if n.startswith(PREFIX)}


SERVICES = ("api", "worker", "relay")


@pytest.mark.parametrize("part", SERVICES)
def test_the_services_log_in_with_their_own_url_and_never_get_the_owners(part: str) -> None:
    for given in (compose_carecoord_names(part), k8s_carecoord_names([part])):
        assert DATABASE_URL in given
        assert MIGRATE_URL not in given


def test_only_the_migrations_get_the_owners_url_and_it_names_another_role() -> None:
    for given in (compose_carecoord_names("migrate"), k8s_carecoord_names(["migrate"])):
        assert MIGRATE_URL in given
        assert DATABASE_URL not in given
    template = next(d for _, d in K8S if d["kind"] == "Secret")["stringData"]
    role = re.compile(r"postgresql://([^:@/]+)")
    services_role = role.search(template[DATABASE_URL])
    owner_role = role.search(template[MIGRATE_URL])
    assert services_role is not None and owner_role is not None
    assert services_role.group(1) == "carecoord_app"
    assert owner_role.group(1) != services_role.group(1)
    # The database is made with both roles, neither a superuser nor able to make roles.
    init = COMPOSE["configs"]["postgres-init"]["content"]
    assert "CREATE ROLE carecoord_app LOGIN PASSWORD" in init
    assert "CREATEROLE" not in init and "SUPERUSER" not in init
    assert "OWNER carecoord;" in init


def test_only_the_audit_writer_gets_the_signing_key_and_the_api_gets_the_public_key() -> None:
    for given in (compose_carecoord_names("api"), k8s_carecoord_names(["api"])):
        assert SIGNING_KEY not in given
        assert PUBLIC_KEY in given
    for part in ("relay", "migrate"):
        assert SIGNING_KEY not in compose_carecoord_names(part)
        assert SIGNING_KEY not in k8s_carecoord_names([part])
    assert SIGNING_KEY in compose_carecoord_names("worker")
    assert SIGNING_KEY in k8s_carecoord_names(["worker"])
