"""infra/: no Docker here, so the files are checked for what can be checked without it: valid YAML,
the services, ports and environment a lab needs, documented variables, and that every deployment's
entrypoint loads the flow the worker serves under the same name."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prefect.flows import load_flow_from_entrypoint

from activeseg.core.config import load_config
from activeseg.orchestration.server import TELEMETRY_OFF
from activeseg.orchestration.names import FLOW_NAMES, campaign_name
from flows import worker

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"


def compose() -> dict:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


def test_compose_has_the_lab_services_and_ports():
    services = compose()["services"]
    assert set(services) == {"minio", "minio-init", "postgres", "prefect-server", "mlflow", "worker", "deploy",
                             "pool-worker", "scheduler", "dask-worker"}
    ports = {name: sorted(p.split(":")[0] for p in s.get("ports", [])) for name, s in services.items()}
    assert (ports["minio"], ports["prefect-server"], ports["mlflow"]) == (["9000", "9001"], ["4200"], ["5000"])
    assert services["prefect-server"]["image"] == "prefecthq/prefect:3.9.1-python3.11"
    assert services["prefect-server"]["environment"]["PREFECT_SERVER_DATABASE_CONNECTION_URL"].startswith(
        "postgresql+asyncpg://prefect:")
    assert services["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert {s.get("profiles", [None])[0] for s in (services["deploy"], services["pool-worker"])} == {"pool"}
    for name in ("worker", "mlflow", "deploy", "pool-worker", "scheduler", "dask-worker"):
        assert services[name]["build"] == {"context": "..", "dockerfile": "infra/Dockerfile"}


def test_a_dask_scheduler_and_two_workers_score_the_pool_of_the_campaigns_volume():
    services = compose()["services"]
    scheduler, worker = services["scheduler"], services["dask-worker"]
    assert scheduler["command"].startswith("dask scheduler --host 0.0.0.0 --port 8786")
    assert sorted(p.split(":")[0] for p in scheduler["ports"]) == ["8786", "8787"]
    assert worker["command"] == "dask worker tcp://scheduler:8786 --nworkers 1 --nthreads 1"
    assert worker["deploy"]["replicas"] == 2 and worker["depends_on"] == ["scheduler"]
    assert worker["volumes"] == ["campaigns:/campaigns:ro"]  # the workspace at the same path as the worker's
    assert worker["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert {k: scheduler["environment"][k] for k in TELEMETRY_OFF} == TELEMETRY_OFF
    readme = (INFRA / "README.md").read_text()
    assert "query.cluster: tcp://scheduler:8786" in readme
    assert load_config(None, ["query.cluster=tcp://scheduler:8786"]).query.cluster == "tcp://scheduler:8786"


def test_activeseg_services_reach_the_server_and_store_with_telemetry_off():
    services = compose()["services"]
    for name in ("worker", "mlflow", "deploy", "pool-worker"):
        env = services[name]["environment"]
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env)
        assert {k: env[k] for k in TELEMETRY_OFF} == TELEMETRY_OFF
    assert services["worker"]["command"] == "python -m flows.worker --workspace /campaigns/${CAMPAIGN:-lab}"
    assert services["worker"]["depends_on"]["prefect-server"] == {"condition": "service_healthy"}
    pool = services["pool-worker"]["environment"]
    assert pool["PREFECT_LOCAL_STORAGE_PATH"] == pool["PREFECT_HOME"] + "/storage"


def test_every_compose_variable_is_documented_and_in_the_env_template():
    text = (INFRA / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z_]+)", text))
    assert used == {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "POSTGRES_PASSWORD", "BUCKET", "MLFLOW_BUCKET",
                    "CAMPAIGN", "DATASETS", "ACTIVESEG_ACTOR", "PREFECT_UI_API_URL", "PREFECT_SERVER_API_AUTH_STRING"}
    readme = (INFRA / "README.md").read_text()
    template = dict(line.split("=", 1) for line in (INFRA / ".env.example").read_text().splitlines()
                    if line and not line.startswith("#"))
    for name in used:
        assert f"`{name}`" in readme, name
        assert name in template, name


def test_dockerfile_copies_what_exists():
    copied = [word for line in (INFRA / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")
              for word in line.split()[1:-1]]
    assert copied and all((ROOT / path).exists() for path in copied)


def test_prefect_yaml_deploys_the_flows_the_worker_serves_under_the_campaign_name():
    spec = yaml.safe_load((INFRA / "prefect.yaml").read_text())
    deployments = spec["deployments"]
    campaign = campaign_name(Path("/campaigns/lab"))
    assert {d["name"] for d in deployments} == {campaign}
    assert {d["parameters"]["workspace"] for d in deployments} == {"/campaigns/lab"}
    assert {d["work_pool"]["name"] for d in deployments} == {"activeseg"}
    loaded = [load_flow_from_entrypoint(str(ROOT / d["entrypoint"])) for d in deployments]
    assert [flow.name for flow in loaded] == list(FLOW_NAMES)
    served = [ref.split(":")[1] for ref, _ in worker.FLOWS]
    assert [d["entrypoint"].split(":")[1] for d in deployments] == served
    assert [len(s["cron"].split()) for d in deployments for s in d.get("schedules", [])] == [5]
