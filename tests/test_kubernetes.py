"""deploy/kubernetes/: both overlays render, every object is valid Kubernetes, and the policy holds.

Rendering uses `kubectl kustomize` (kustomize is built into kubectl); validation uses the
schemas that the kubernetes-validate package ships, so nothing here needs a cluster or
the network.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
OVERLAYS = ROOT / "deploy" / "kubernetes" / "overlays"
# The oldest Kubernetes release the manifests must be valid for (autoscaling/v2, policy/v1).
KUBERNETES_VERSION = "1.27"
SERVICES = {"authgate-auth": 8001, "authgate-gateway": 8000}
# What README's `kubectl create secret` commands make for prod (never rendered from git).
OUT_OF_BAND_SECRETS = {
    ("Secret", "authgate-database"): {
        "DATABASE_URL": "postgresql+psycopg2://authgate:pw@db.example.internal:5432/authgate",
        "REDIS_URL": "redis://redis.example.internal:6379/0",
    }
}


@pytest.fixture(scope="module", params=["dev", "prod"])
def rendered(
    request: pytest.FixtureRequest, missing_server: Callable[[str, str], None]
) -> tuple[str, list[dict[str, Any]]]:
    if shutil.which("kubectl") is None:
        missing_server("kubectl", "renders the kustomize overlays; install kubectl")
    done = subprocess.run(
        ["kubectl", "kustomize", str(OVERLAYS / request.param)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"kustomize {request.param} failed: {done.stderr}"
    objects = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    assert objects, f"overlay {request.param} rendered nothing"
    return request.param, objects


def _of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _job_spec(o: dict[str, Any]) -> dict[str, Any]:
    """The Job spec of a Job or of a CronJob's template."""
    return o["spec"]["jobTemplate"]["spec"] if o["kind"] == "CronJob" else o["spec"]


def _pod_specs(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    specs = {}
    for o in objects:
        owner = f"{o['kind']}/{o['metadata']['name']}"
        if o["kind"] == "Deployment":
            specs[owner] = o["spec"]["template"]["spec"]
        elif o["kind"] in ("Job", "CronJob"):
            specs[owner] = _job_spec(o)["template"]["spec"]
    return specs


def test_every_object_is_valid_kubernetes(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    overlay, objects = rendered
    for obj in objects:
        # strict: an unknown (e.g. misspelt) field is an error, not silently dropped.
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    kinds = {o["kind"] for o in objects}
    want = {
        "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
        "NetworkPolicy", "Job", "ConfigMap",
    }  # fmt: skip
    assert want <= kinds, f"{overlay} lacks {sorted(want - kinds)}"


def test_validation_rejects_a_broken_object(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    # Guards the check above against a validator that accepts anything.
    _, objects = rendered
    deployment = dict(next(o for o in objects if o["kind"] == "Deployment"))
    deployment["spec"] = {**deployment["spec"], "replicas": "two"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_every_container_has_probes_limits_and_runs_locked_down(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    overlay, objects = rendered
    pods = _pod_specs(objects)
    assert len(pods) == 4, (
        f"{overlay}: want 2 Deployments, the migration Job and the prune-audit CronJob, "
        f"got {sorted(pods)}"
    )
    for owner, pod in pods.items():
        assert pod.get("automountServiceAccountToken") is False, f"{owner} mounts an API token"
        for container in pod["containers"] + pod.get("initContainers", []):
            where = f"{overlay} {owner} container {container['name']}"
            security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
            assert security.get("runAsNonRoot") is True, f"{where}: runAsNonRoot not set"
            assert security.get("runAsUser", 0) != 0, f"{where}: runs as uid 0"
            assert security.get("readOnlyRootFilesystem") is True, f"{where}: writable root fs"
            assert security.get("allowPrivilegeEscalation") is False, f"{where}: can escalate"
            assert security.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: caps"
            limits = container.get("resources", {}).get("limits", {})
            assert {"cpu", "memory"} <= set(limits), f"{where}: limits {limits}"
            if owner.startswith(("Job/", "CronJob/")):
                # A Job has no server to probe; its deadline bounds a hung run instead.
                assert _job_spec(objects_by_id(objects)[owner])["activeDeadlineSeconds"] > 0
                continue
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", where
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", where


def objects_by_id(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in objects}


def test_deployments_are_replicated_autoscaled_and_disruption_budgeted(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    overlay, objects = rendered
    deployments = _of_kind(objects, "Deployment")
    assert set(deployments) == set(SERVICES), f"{overlay}: deployments {sorted(deployments)}"
    autoscalers = _of_kind(objects, "HorizontalPodAutoscaler").values()
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in autoscalers}
    pdbs = _of_kind(objects, "PodDisruptionBudget")
    for name, deployment in deployments.items():
        assert deployment["spec"]["replicas"] >= 2, f"{overlay} {name}: fewer than 2 replicas"
        assert hpas[name]["spec"]["minReplicas"] >= 2, f"{overlay} {name}: HPA min < 2"
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = pdbs[name]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), f"{overlay} {name}: PDB selects other pods"
        assert pdbs[name]["spec"]["minAvailable"] < deployment["spec"]["replicas"], (
            f"{overlay} {name}: the PDB would block every voluntary eviction"
        )


def test_only_the_gateway_is_reachable_and_auth_only_from_it(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    overlay, objects = rendered
    policies = list(_of_kind(objects, "NetworkPolicy").values())
    deny_all = [
        p for p in policies if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")
    ]
    assert deny_all, f"{overlay}: no default-deny ingress policy"
    by_target = {
        p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]: p
        for p in policies
        if p["spec"]["podSelector"]
    }
    assert set(by_target) == set(SERVICES), f"{overlay}: policies for {sorted(by_target)}"
    (auth_rule,) = by_target["authgate-auth"]["spec"]["ingress"]
    assert auth_rule["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "authgate-gateway"}}}
    ], f"{overlay}: auth accepts traffic from more than the gateway"
    assert [p["port"] for p in auth_rule["ports"]] == [SERVICES["authgate-auth"]]
    services = _of_kind(objects, "Service")
    # Headless: the gateway resolves every auth pod and spreads requests itself.
    assert services["authgate-auth"]["spec"]["clusterIP"] == "None"
    assert services["authgate-auth"]["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_secrets_never_come_from_git_in_prod(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    overlay, objects = rendered
    secrets = _of_kind(objects, "Secret")
    if overlay == "prod":
        assert not secrets, f"prod renders Secrets {sorted(secrets)}: create them out of band"
        return
    referenced = {
        ref["secretRef"]["name"]
        for pod in _pod_specs(objects).values()
        for container in pod["containers"]
        for ref in container.get("envFrom", [])
        if "secretRef" in ref
    }
    assert referenced <= set(secrets), f"dev references missing Secrets {referenced - set(secrets)}"


def _container_env(objects: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """A container's environment as the kubelet would build it from the rendered objects."""
    data = {
        **OUT_OF_BAND_SECRETS,
        **{
            (o["kind"], o["metadata"]["name"]): {**o.get("data", {}), **o.get("stringData", {})}
            for o in objects
            if o["kind"] in ("Secret", "ConfigMap")
        },
    }
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        kind, ref = (
            ("Secret", "secretRef") if "secretRef" in source else ("ConfigMap", "configMapRef")
        )
        env.update(data[(kind, source[ref]["name"])])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = data[("Secret", ref["name"])][ref["key"]]
    return env


@pytest.mark.parametrize(
    ("deployment", "settings_module"),
    [("authgate-auth", "auth_service.settings"), ("authgate-gateway", "gateway_service.settings")],
)
def test_environment_passes_the_settings(
    rendered: tuple[str, list[dict[str, Any]]], deployment: str, settings_module: str
) -> None:
    # Catches a misspelt variable's value or a setting combination the service refuses.
    _, objects = rendered
    (container,) = _of_kind(objects, "Deployment")[deployment]["spec"]["template"]["spec"][
        "containers"
    ]
    from importlib import import_module

    settings = import_module(settings_module)
    settings.Settings.from_env(_container_env(objects, container))


def test_the_audit_trail_is_pruned_daily_one_run_at_a_time(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    overlay, objects = rendered
    job = _of_kind(objects, "CronJob")["authgate-prune-audit"]
    assert job["spec"]["concurrencyPolicy"] == "Forbid", overlay
    minute, hour, *every = job["spec"]["schedule"].split()
    assert every == ["*", "*", "*"] and minute.isdigit() and hour.isdigit(), overlay
    (container,) = _job_spec(job)["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "auth_service.cli", "prune-audit"]
    assert {"secretRef": {"name": "authgate-database"}} in container["envFrom"]
