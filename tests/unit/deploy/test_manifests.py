"""deploy/k8s renders, validates against Kubernetes' and the operators' schemas, and
keeps the policies SREs rely on, with no cluster."""

from __future__ import annotations

import importlib
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from deploy.k8s import gen_netpol
from services.console.domain.operators import entry
from services.runtime.config import describe, load_settings
from tests.unit.deploy.kustomize import K8S, RENDERED, of_kind, render

# Every service under services/, found the way the network policies find them.
SERVICES = gen_netpol.SERVICES
CLIENTS = ("gateway", "pos", "operator")
OVERLAYS = ("overlays/dev", "overlays/production")
# The oldest Kubernetes the README supports (native gRPC probes, preStop sleep) and the newest
# whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
SCHEMAS = K8S / "schemas"
CUSTOM_GROUPS = ("postgresql.cnpg.io", "cert-manager.io", "monitoring.coreos.com")
PKI_FILES = {"ca.crt": "ca.pem", "tls.crt": "{name}.pem", "tls.key": "{name}-key.pem"}


def settings_class(service: str) -> Any:
    return gen_netpol.settings_class(service)


def http_port(service: str) -> int:
    """The port of the service's HTTP API (0: it serves none)."""
    return gen_netpol.service_ports(service).http


def pod_specs(objects: tuple[dict[str, Any], ...]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"])
        for obj in objects
        if obj["kind"] in ("Deployment", "Job")
    ]


def deployment(objects: tuple[dict[str, Any], ...], service: str) -> dict[str, Any]:
    (found,) = [d for d in of_kind(objects, "Deployment") if d["metadata"]["name"] == service]
    return found


def container_env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


@cache
def custom_schema(api_version: str, kind: str) -> dict[str, Any]:
    group, version = api_version.split("/")
    path = SCHEMAS / f"{group}_{kind}_{version}.json".lower()
    assert path.is_file(), f"no schema for {kind} {api_version} in {SCHEMAS}"
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


def test_ci_renders_both_overlays_and_the_test_combinations():
    assert {*OVERLAYS, "tests/without-operators", "."} <= set(RENDERED)


def test_every_service_in_the_repository_is_deployed():
    assert {"identity", "wallet", "risk", "notify", "gateway"} <= set(SERVICES)
    deployed = {d["metadata"]["name"] for d in of_kind(render("."), "Deployment")}
    assert deployed == set(SERVICES)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("kustomization", RENDERED)
def test_every_built_in_object_is_valid_kubernetes_in_strict_mode(kustomization, version):
    objects = render(kustomization)
    assert objects
    for obj in objects:
        if obj["apiVersion"].split("/")[0] in CUSTOM_GROUPS:
            continue
        # Unknown kinds raise SchemaNotFoundError: nothing passes unchecked.
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("kustomization", RENDERED)
def test_every_custom_resource_matches_its_operators_schema(kustomization):
    for obj in render(kustomization):
        if obj["apiVersion"].split("/")[0] not in CUSTOM_GROUPS:
            continue
        schema = custom_schema(obj["apiVersion"], obj["kind"])
        errors = sorted(
            jsonschema.Draft202012Validator(schema).iter_errors(obj), key=lambda e: e.path
        )
        assert not errors, [
            f"{obj['kind']}/{obj['metadata']['name']} {list(e.path)}: {e.message}" for e in errors
        ]


def test_the_custom_resource_schemas_reject_an_unknown_field():
    pooler = next(o for o in render("overlays/production") if o["kind"] == "Pooler")
    broken = {**pooler, "spec": {**pooler["spec"], "pgbouncer": {"poolMod": "transaction"}}}
    validator = jsonschema.Draft202012Validator(custom_schema(pooler["apiVersion"], "Pooler"))
    assert not validator.is_valid(broken)


@pytest.mark.parametrize("kustomization", RENDERED)
def test_every_container_runs_as_non_root_on_a_read_only_root_filesystem(kustomization):
    pods = pod_specs(render(kustomization))
    assert len(pods) == 2 * len(SERVICES)
    for name, pod in pods:
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True, name
        assert security["runAsUser"] > 0, name
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        tmp = [v for v in pod["volumes"] if v["name"] == "tmp"]
        assert tmp and "emptyDir" in tmp[0], name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"], name  # noqa: S108
            assert "memory" in container["resources"]["limits"], name
            assert re.fullmatch(r".+:[\w.-]+", container["image"]), name
            assert not container["image"].endswith(":latest"), name


@pytest.mark.parametrize("kustomization", RENDERED)
def test_every_service_account_mounts_no_api_token(kustomization):
    accounts = of_kind(render(kustomization), "ServiceAccount")
    assert {a["metadata"]["name"] for a in accounts} == set(SERVICES)
    assert all(a["automountServiceAccountToken"] is False for a in accounts)


@pytest.mark.parametrize("kustomization", RENDERED)
def test_every_deployment_probes_grpc_health_on_its_plaintext_health_port(kustomization):
    objects = render(kustomization)
    for service in SERVICES:
        cls = settings_class(service)
        (container,) = deployment(objects, service)["spec"]["template"]["spec"]["containers"]
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert ports["health"] == cls.default_health_port
        assert ports["grpc"] == cls.default_grpc_port
        metrics = getattr(cls, "default_metrics_port", 0) or gen_netpol.METRICS_PORTS[service]
        assert ports["metrics"] == metrics
        assert container["command"] == ["python", "-m", f"services.{service}"]
        for probe in ("startupProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": ports["health"]}, (service, probe)
        readiness = container["readinessProbe"]
        if http_port(service):
            # Ready for partners once the API says so (risk's kill switches are known).
            assert ports["http"] == http_port(service)
            assert readiness["httpGet"] == {"path": "/health/ready", "port": "http"}
        else:
            assert readiness["grpc"] == {"port": ports["health"]}, service


@pytest.mark.parametrize("kustomization", RENDERED)
def test_every_deployment_has_a_disruption_budget_and_an_autoscaler(kustomization):
    objects = render(kustomization)
    budgets = of_kind(objects, "PodDisruptionBudget")
    scalers = of_kind(objects, "HorizontalPodAutoscaler")
    for service in SERVICES:
        labels = deployment(objects, service)["spec"]["template"]["metadata"]["labels"]
        (budget,) = [b for b in budgets if b["metadata"]["name"] == service]
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
        (scaler,) = [s for s in scalers if s["spec"]["scaleTargetRef"]["name"] == service]
        assert scaler["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        (metric,) = scaler["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"


def test_production_runs_three_replicas_and_keeps_two_through_disruptions():
    objects = render("overlays/production")
    for scaler in of_kind(objects, "HorizontalPodAutoscaler"):
        assert scaler["spec"]["minReplicas"] == 3
        assert scaler["spec"]["maxReplicas"] > 3
    for budget in of_kind(objects, "PodDisruptionBudget"):
        assert budget["spec"] == {**budget["spec"], "minAvailable": 2}
        assert "maxUnavailable" not in budget["spec"]
    for deploy in of_kind(objects, "Deployment"):
        # The autoscaler owns the count; a fixed one would be reset by every apply.
        assert "replicas" not in deploy["spec"]
        zones, nodes = deploy["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert zones["topologyKey"] == "topology.kubernetes.io/zone"
        assert nodes["topologyKey"] == "kubernetes.io/hostname"


def test_dev_runs_one_replica_of_each_service():
    for scaler in of_kind(render("overlays/dev"), "HorizontalPodAutoscaler"):
        assert (scaler["spec"]["minReplicas"], scaler["spec"]["maxReplicas"]) == (1, 1)


@pytest.mark.parametrize("kustomization", RENDERED)
def test_every_service_is_headless_so_clients_balance_over_all_replicas(kustomization):
    objects = render(kustomization)
    for service in SERVICES:
        (svc,) = [s for s in of_kind(objects, "Service") if s["metadata"]["name"] == service]
        assert svc["spec"]["clusterIP"] == "None"
        ports = {p["name"]: p for p in svc["spec"]["ports"]}
        assert ports["grpc"]["port"] == settings_class(service).default_grpc_port
        assert "metrics" in ports
        if http_port(service):
            # HTTP is balanced per request by the proxy or Ingress, so a virtual IP.
            (api,) = [
                s for s in of_kind(objects, "Service") if s["metadata"]["name"] == f"{service}-http"
            ]
            assert api["spec"].get("clusterIP") != "None"
            assert api["spec"]["selector"] == svc["spec"]["selector"]
            assert [p["targetPort"] for p in api["spec"]["ports"]] == ["http"]


@pytest.mark.parametrize("kustomization", RENDERED)
def test_every_configmap_setting_is_a_variable_its_service_reads(kustomization):
    objects = render(kustomization)
    for service in SERVICES:
        (config,) = [
            c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"].startswith(service)
        ]
        known = {name for name, _, _ in describe(settings_class(service))}
        assert set(config["data"]) <= known, sorted(set(config["data"]) - known)
        assert config["data"][f"{service.upper()}_GRPC_HOST"] == "0.0.0.0"
        if http_port(service):
            assert config["data"][f"{service.upper()}_HTTP_HOST"] == "0.0.0.0"
        for peer in SERVICES:
            if f"{peer.upper()}_ADDRESS" not in known:
                continue
            port = settings_class(peer).default_grpc_port
            assert config["data"][f"{peer.upper()}_ADDRESS"] == f"dns:///{peer}:{port}"
        (container,) = deployment(objects, service)["spec"]["template"]["spec"]["containers"]
        refs = [e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e]
        assert refs == [config["metadata"]["name"]]


def test_every_configmap_with_its_secrets_makes_settings_the_service_accepts():
    objects = render("overlays/production")
    for service in SERVICES:
        (config,) = [
            c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"].startswith(service)
        ]
        # What the Secrets add (placeholders of the right shape) and the Deployment's env.
        environ = {
            **config["data"],
            "DATABASE_URL": f"postgresql://{service}-db-pooler-rw:5432/{service}",
            "IDENTITY_SECRETS_KEY": "A" * 43 + "=",
            "IDENTITY_PSEUDONYM_KEY": "B" * 43 + "=",
            "GATEWAY_SECRETS_KEY": "C" * 43 + "=",
            "CONSOLE_OPERATORS": entry("aiko.sato", "a placeholder password"),
        }
        settings = load_settings(settings_class(service), environ)
        assert settings.metrics_port == gen_netpol.service_ports(service).metrics


@pytest.mark.parametrize("kustomization", RENDERED)
def test_services_query_through_the_pooler_and_migrate_on_the_primary(kustomization):
    objects = render(kustomization)
    for service in SERVICES:
        (container,) = deployment(objects, service)["spec"]["template"]["spec"]["containers"]
        env = container_env(container)
        pooled = env["DATABASE_URL"]["value"]
        assert pooled.startswith(f"postgresql://{service}-db-pooler-rw:5432/{service}?")
        for variable, key in (("PGUSER", "username"), ("PGPASSWORD", "password")):
            secret = env[variable]["valueFrom"]["secretKeyRef"]
            assert secret == {"name": f"{service}-db-app", "key": key}
        direct = env["DATABASE_DIRECT_URL"]["valueFrom"]["secretKeyRef"]
        assert direct == {"name": f"{service}-db-app", "key": "uri"}
        (job,) = [
            j for j in of_kind(objects, "Job") if j["metadata"]["name"] == f"{service}-migrate"
        ]
        (migrate,) = job["spec"]["template"]["spec"]["containers"]
        assert migrate["command"] == ["python", "-m", f"services.{service}", "migrate"]
        assert container_env(migrate)["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == direct


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_database_gets_a_transaction_mode_pooler_and_backups_in_production(overlay):
    objects = render(overlay)
    clusters = {c["metadata"]["name"]: c for c in of_kind(objects, "Cluster")}
    assert set(clusters) == {f"{s}-db" for s in SERVICES}
    for service in SERVICES:
        assert clusters[f"{service}-db"]["spec"]["bootstrap"]["initdb"]["database"] == service
    poolers = {p["spec"]["cluster"]["name"]: p for p in of_kind(objects, "Pooler")}
    assert set(poolers) == set(clusters)
    for name, pooler in poolers.items():
        assert pooler["metadata"]["name"] == f"{name}-pooler-rw"
        assert pooler["spec"]["type"] == "rw"
        assert pooler["spec"]["pgbouncer"]["poolMode"] == "transaction"
    backups = {b["spec"]["cluster"]["name"] for b in of_kind(objects, "ScheduledBackup")}
    if overlay == "overlays/production":
        assert backups == set(clusters)
        assert all(c["spec"]["instances"] == 3 for c in clusters.values())
        assert all("barmanObjectStore" in c["spec"]["backup"] for c in clusters.values())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cert_manager_issues_each_principal_the_files_pki_reads(overlay):
    objects = render(overlay)
    certificates = {
        c["metadata"]["name"]: c["spec"]
        for c in of_kind(objects, "Certificate")
        if not c["spec"].get("isCA")
    }
    assert set(certificates) == {*SERVICES, *CLIENTS}
    for name, spec in certificates.items():
        assert spec["commonName"] == name
        assert name in spec["dnsNames"]
        assert spec["secretName"] == f"{name}-tls"
        assert {"server auth", "client auth"} <= set(spec["usages"])
        assert spec["issuerRef"]["name"] == "mamoru-ca"
    for service in SERVICES:
        pod = deployment(objects, service)["spec"]["template"]["spec"]
        (tls,) = [v["secret"] for v in pod["volumes"] if v["name"] == "tls"]
        assert tls["secretName"] == f"{service}-tls"
        files = {item["key"]: item["path"] for item in tls["items"]}
        assert files == {key: path.format(name=service) for key, path in PKI_FILES.items()}
        (container,) = pod["containers"]
        mount = next(m for m in container["volumeMounts"] if m["name"] == "tls")
        config = next(
            c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"].startswith(service)
        )
        assert config["data"]["MAMORU_TLS_DIR"] == mount["mountPath"]


def test_network_policy_files_equal_what_the_access_tables_generate():
    assert gen_netpol.main(["--check"]) == 0


def access_graph() -> set[tuple[str, str]]:
    """(caller, callee) for every principal an access table lets call a service."""
    edges = set()
    for service in SERVICES:
        table = importlib.import_module(f"services.{service}.access").ACCESS
        edges |= {(c, service) for access in table.values() for c in access.callers}
    return {(caller, callee) for caller, callee in edges if caller != callee}


def principals(peers: list[dict[str, Any]]) -> list[str]:
    return [
        peer["podSelector"]["matchLabels"][gen_netpol.PRINCIPAL_LABEL]
        for peer in peers
        if gen_netpol.PRINCIPAL_LABEL in peer.get("podSelector", {}).get("matchLabels", {})
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_allow_exactly_one_rule_per_call_graph_edge(overlay):
    policies = of_kind(render(overlay), "NetworkPolicy")
    (deny,) = [p for p in policies if p["metadata"]["name"] == "mamoru-deny-all"]
    assert deny["spec"] == {
        "podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "mamoru"}},
        "policyTypes": ["Ingress", "Egress"],
    }
    ingress_edges: list[tuple[str, str]] = []
    egress_edges: list[tuple[str, str]] = []
    for policy in policies:
        selected = policy["spec"]["podSelector"].get("matchLabels", {})
        owner = selected.get(gen_netpol.PRINCIPAL_LABEL)
        for rule in policy["spec"].get("ingress", []):
            callers = principals(rule["from"])
            assert owner or not callers, policy["metadata"]["name"]
            ingress_edges += [(caller, owner) for caller in callers]
            if callers:
                assert rule["ports"] == [
                    {"port": settings_class(owner).default_grpc_port, "protocol": "TCP"}
                ]
        for rule in policy["spec"].get("egress", []):
            callees = principals(rule["to"])
            egress_edges += [(owner, callee) for callee in callees]
    graph = access_graph()
    assert sorted(ingress_edges) == sorted(graph)
    # A service calls as its principal (the console as `operator`), to what it declares.
    calling_as = {gen_netpol.principal_of(service): service for service in SERVICES}
    assert sorted(egress_edges) == sorted(
        (a, b)
        for a, b in graph
        if a in calling_as and b in declared_outbound(calling_as[a], SERVICES)
    )


def declared_outbound(service: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """The callees a service's access.py declares it calls (OUTBOUND), else ``default``."""
    module = importlib.import_module(f"services.{service}.access")
    return tuple(getattr(module, "OUTBOUND", {s: () for s in default}))


def test_the_gateway_may_reach_wallet_and_risk_and_nothing_else_of_ours():
    policy = gen_netpol.policies()["gateway.yaml"]
    callees = [callee for rule in policy["spec"]["egress"] for callee in principals(rule["to"])]
    assert sorted(callees) == ["risk", "wallet"]


def test_an_outbound_call_the_callee_does_not_allow_is_refused(monkeypatch):
    access = importlib.import_module("services.gateway.access")
    monkeypatch.setattr(access, "OUTBOUND", {**access.OUTBOUND, "wallet": ("CreditWallet",)})
    with pytest.raises(ValueError, match="CreditWallet"):
        gen_netpol.policies()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_partner_api_is_open_to_the_namespace_and_the_ingress_controller(overlay):
    policies = {p["metadata"]["name"]: p for p in of_kind(render(overlay), "NetworkPolicy")}
    for name, policy in policies.items():
        for rule in policy["spec"].get("ingress", []):
            if {"podSelector": {}} not in rule["from"]:
                continue
            # Only a service's HTTP API; its gRPC and metrics ports stay closed to them.
            assert name in SERVICES and http_port(name), name
            assert rule["ports"] == [{"port": http_port(name), "protocol": "TCP"}]
            ingress = {"kubernetes.io/metadata.name": gen_netpol.INGRESS_NAMESPACE}
            assert {"namespaceSelector": {"matchLabels": ingress}} in rule["from"]
    assert any(
        {"podSelector": {}} in rule["from"] for rule in policies["gateway"]["spec"]["ingress"]
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_console_pages_are_open_to_the_operators_ingress_alone(overlay):
    policies = {p["metadata"]["name"]: p for p in of_kind(render(overlay), "NetworkPolicy")}
    operators = {"kubernetes.io/metadata.name": gen_netpol.OPERATOR_INGRESS_NAMESPACE}
    reaching = [
        rule["from"]
        for policy in policies.values()
        for rule in policy["spec"].get("ingress", [])
        if rule["ports"] == [{"port": http_port("console"), "protocol": "TCP"}]
    ]
    assert reaching == [[{"namespaceSelector": {"matchLabels": operators}}]]
    assert [s for s in SERVICES if http_port(s)] == ["gateway", "console"]


def test_the_console_calls_as_the_operator_only_what_it_declares():
    policy = gen_netpol.policies()["console.yaml"]
    selected = policy["spec"]["podSelector"]["matchLabels"]
    assert selected == {gen_netpol.PRINCIPAL_LABEL: "operator", "app.kubernetes.io/name": "console"}
    callees = [callee for rule in policy["spec"]["egress"] for callee in principals(rule["to"])]
    assert sorted(callees) == ["identity", "risk", "wallet"]
    pod = deployment(render("overlays/production"), "console")["spec"]["template"]
    assert pod["metadata"]["labels"].items() >= selected.items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_reaches_only_its_own_database(overlay):
    policies = {p["metadata"]["name"]: p for p in of_kind(render(overlay), "NetworkPolicy")}
    for service in SERVICES:
        reached = {
            value
            for rule in policies[service]["spec"]["egress"]
            for peer in rule["to"]
            for key, value in peer.get("podSelector", {}).get("matchLabels", {}).items()
            if key.startswith("cnpg.io/")
        }
        assert reached == {f"{service}-db", f"{service}-db-pooler-rw"}


# What services/runtime/metrics.py exports (names as Prometheus exposes them).
EXPORTED = {
    "mamoru_rpc_requests_total",
    "mamoru_rpc_duration_seconds_bucket",
    "mamoru_db_pool_connections",
    "mamoru_outbox_backlog",
    "mamoru_outbox_oldest_age_seconds",
    "mamoru_kill_switch",
    "mamoru_notify_delivery_lag_seconds",
    "mamoru_notify_retries_total",
    "mamoru_notify_dead_letters_total",
    "mamoru_risk_decisions_total",
    "mamoru_risk_stuffing_signal",
    "mamoru_identity_password_hashes_total",
    "mamoru_identity_password_hashes_in_flight",
    "mamoru_identity_refused_without_hash_total",
    "mamoru_http_requests_total",
    "mamoru_http_request_duration_seconds_bucket",
}


def test_alerts_cover_the_incident_and_use_only_exported_series():
    objects = render("overlays/production")
    (rule_set,) = of_kind(objects, "PrometheusRule")
    alerts = {
        rule["alert"]: rule["expr"]
        for group in rule_set["spec"]["groups"]
        for rule in group["rules"]
    }
    assert {
        "MamoruStuffingWave",
        "MamoruOutboxBacklog",
        "MamoruNotifyDeadLetters",
        "MamoruHighErrorRate",
        "MamoruGatewayHighErrorRate",
    } <= set(alerts)
    for name, expr in alerts.items():
        used = set(re.findall(r"\bmamoru_[a-z_]+", expr))
        assert used and used <= EXPORTED, (name, used - EXPORTED)
    (monitor,) = of_kind(objects, "PodMonitor")
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    for service in SERVICES:
        template = deployment(objects, service)["spec"]["template"]
        assert selector.items() <= template["metadata"]["labels"].items()
        (container,) = template["spec"]["containers"]
        assert "metrics" in {port["name"] for port in container["ports"]}


def test_kubernetes_validate_rejects_a_misspelt_field():
    (deploy, *_) = of_kind(render("overlays/dev"), "Deployment")
    broken = {**deploy, "spec": {**deploy["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_every_schema_file_is_used_by_some_rendered_object():
    used = {
        f"{o['apiVersion'].replace('/', '_' + o['kind'] + '_', 1)}.json".lower()
        for kustomization in RENDERED
        for o in render(kustomization)
        if o["apiVersion"].split("/")[0] in CUSTOM_GROUPS
    }
    kept = {path.name for path in Path(SCHEMAS).glob("*.json")}
    # ServiceMonitor is kept for installations that scrape through the Services instead.
    assert kept - used <= {"monitoring.coreos.com_servicemonitor_v1.json"}
