"""infra/ manifests: they parse, carry the fields their tools need, and offer what the
production config's stages declare (every stage section present, so new stages are
checked as they arrive)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import ray
import yaml

from mfpipe.pipeline import registry
from mfpipe.pipeline.config import load_config
from mfpipe.pipeline.stage import StageConfig

INFRA = Path(__file__).resolve().parents[2] / "infra"


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((INFRA / name).read_text()) if d]


def _one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}"
    return found[0]


def _quantity(value) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _production_stages() -> dict[str, StageConfig]:
    cfg = load_config(overrides=["profile=production"])
    return {name: cfg.stage_section(name) for name in registry.stages()}


@pytest.fixture(scope="module")
def raycluster() -> dict:
    return _one(_docs("kuberay/raycluster.yaml"), "RayCluster")


def _groups(raycluster: dict) -> dict[str, dict]:
    """Worker group → the CPUs / GPUs one of its pods offers Ray."""
    out = {}
    for group in raycluster["spec"]["workerGroupSpecs"]:
        (container,) = group["template"]["spec"]["containers"]
        limits = container["resources"]["limits"]
        assert container["resources"]["requests"] == limits, "requests = limits: Ray sees what it gets"
        out[group["groupName"]] = {"CPU": _quantity(limits["cpu"]), "GPU": _quantity(limits.get("nvidia.com/gpu", 0))}
    return out


def _fits(stage: str, section: StageConfig, nodes: dict[str, dict]) -> None:
    res = section.resources
    if res.gpus > 0:
        hosts = [n for n, r in nodes.items() if r["GPU"] >= res.gpus and r["CPU"] >= res.cpus]
    else:  # CPU stages belong on the CPU nodes, not on the GPUs' hosts
        hosts = [n for n, r in nodes.items() if r["GPU"] == 0 and r["CPU"] >= res.cpus]
    assert hosts, f"no node type can host one {stage} worker ({res.cpus:g} CPU, {res.gpus:g} GPU): {nodes}"


def test_production_profile_sizes_workers_as_the_infra_expects():
    stages = _production_stages()
    assert "ingest" in stages
    for name, section in stages.items():
        if name in ("mir",):
            assert section.resources.gpus == 0 and section.resources.cpus == 1
        if name in ("caption", "lyrics", "filter", "think"):
            assert 0 < section.resources.gpus <= 1  # a share of one GPU (Parakeet's is small)
    assert stages["lyrics"].resources.gpus < stages["caption"].resources.gpus


def test_raycluster(raycluster):
    assert raycluster["apiVersion"] == "ray.io/v1"
    spec = raycluster["spec"]
    assert spec["rayVersion"] == ray.__version__
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # the head runs drivers, not stage workers
    nodes = _groups(raycluster)
    assert {"cpu", "gpu"} <= set(nodes) and nodes["cpu"]["GPU"] == 0 and nodes["gpu"]["GPU"] >= 1
    for name, section in _production_stages().items():
        _fits(name, section, nodes)
    pods = [head["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    images = {c["image"] for p in pods for c in p["spec"]["containers"]}
    assert len(images) == 1, "every node must run the same mfpipe"
    # Token auth is the operator's: it hands the token to every container, the submitter and its own
    # dashboard client (a token only in container env leaves the operator polling unauthenticated).
    assert spec["authOptions"] == {"mode": "token", "secretName": "mfpipe-ray-token"}
    llm = load_config(overrides=["profile=production"]).llm
    for pod in pods:
        env = {e["name"]: e for c in pod["spec"]["containers"] for e in c.get("env", [])}
        assert "RAY_AUTH_TOKEN" not in env and "RAY_AUTH_MODE" not in env  # not beside the operator's
        key = env[llm.api_key_env]["valueFrom"]["secretKeyRef"]
        assert key == {"name": "mfpipe-llm-key", "key": "api_key"}  # the vLLM Service's key
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_rayjob_runs_a_valid_mfpipe_command(raycluster, tmp_path):
    docs = _docs("kuberay/rayjob.yaml")
    job = _one(docs, "RayJob")
    assert job["apiVersion"] == "ray.io/v1"
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == raycluster["metadata"]["name"]
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["mfpipe", "run"]
    opts = dict(zip(argv[2::2], argv[3::2]))
    assert opts["--stage"] == "all" or opts["--stage"] in registry.CANONICAL
    assert all("://" in opts[k] for k in ("--input", "--output"))
    # The config file it names is the ConfigMap mounted on the head, and it loads.
    config_path = Path(opts["--config"])
    head = raycluster["spec"]["headGroupSpec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in head["containers"][0]["volumeMounts"]}
    volume = next(v for v in head["volumes"] if v["name"] == "mfpipe-config")
    configmap = _one(docs, "ConfigMap")
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert str(config_path.parent) == mounts["mfpipe-config"]
    local = tmp_path / config_path.name
    local.write_text(configmap["data"][config_path.name])
    assert load_config(local).profile == "production"
    submitter = job["spec"]["submitterPodTemplate"]["spec"]["containers"][0]
    assert not {e["name"] for e in submitter.get("env", [])} & {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}  # the operator's


def test_vllm_deployment_and_service():
    docs = _docs("vllm/deployment.yaml")
    deploy, service = _one(docs, "Deployment"), _one(docs, "Service")
    pod = deploy["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    (container,) = pod["spec"]["containers"]
    args = dict(a.removeprefix("--").split("=", 1) for a in container["args"] if "=" in a)
    port = int(args["port"])
    # `vllm serve MODEL`: the model positional (--model is deprecated), first
    assert container["command"] == ["vllm", "serve"] and not container["args"][0].startswith("-")
    assert "model" not in args and args["host"] == "0.0.0.0"
    assert container["ports"][0]["containerPort"] == port
    assert service["spec"]["ports"][0]["targetPort"] == port
    assert _quantity(container["resources"]["limits"]["nvidia.com/gpu"]) >= int(args["tensor-parallel-size"])
    assert container["readinessProbe"]["httpGet"]["port"] == port
    # A cold start (weights downloaded and loaded) may take half an hour: the startup probe waits that long
    # before the liveness probe may restart the pod.
    startup = container["startupProbe"]
    assert startup["httpGet"]["port"] == port and startup["periodSeconds"] * startup["failureThreshold"] >= 1800
    assert "initialDelaySeconds" not in container["livenessProbe"]
    # Every request needs the key of a Secret, and only the Ray pods may connect.
    env = {e["name"]: e for e in container["env"]}
    assert env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "mfpipe-llm-key", "key": "api_key"}
    assert not any("api-key" in a or "api_key" in a for a in container["args"])  # never on the command line
    policy = _one(docs, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    (rule,) = policy["spec"]["ingress"]
    cluster = _one(_docs("kuberay/raycluster.yaml"), "RayCluster")["metadata"]["name"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"ray.io/cluster": cluster}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": port}]
    # The URL the RayJob's config points the LLM stages at is this Service.
    rayjob_text = (INFRA / "kuberay/rayjob.yaml").read_text()
    assert f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/v1" in rayjob_text


def test_ray_up_cluster():
    (cfg,) = _docs("ray-up/cluster.yaml")
    for key in ("cluster_name", "provider", "auth", "available_node_types", "head_node_type",
                "head_start_ray_commands", "worker_start_ray_commands"):
        assert key in cfg, key
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    for name, node in types.items():
        assert {"resources", "node_config", "min_workers", "max_workers"} <= set(node), name
    assert types[cfg["head_node_type"]]["resources"]["CPU"] == 0
    nodes = {n: {"CPU": float(t["resources"].get("CPU", 0)), "GPU": float(t["resources"].get("GPU", 0))}
             for n, t in types.items() if n != cfg["head_node_type"]}
    for name, section in _production_stages().items():
        _fits(name, section, nodes)
    assert sum(t["max_workers"] for t in types.values()) <= cfg["max_workers"]
    assert any("RAY_AUTH_MODE=token" in c for c in cfg["head_start_ray_commands"])
    assert any("RAY_AUTH_MODE=token" in c for c in cfg["worker_start_ray_commands"])


def test_dockerfile_installs_what_the_nodes_need():
    """The image is the env scripts/install.sh makes on a GPU machine: the same torch pin first, the same
    extras, the same constraints; and the build context leaves a checkout's envs and caches out."""
    text = (INFRA / "Dockerfile").read_text()
    install = (INFRA.parent / "scripts/install.sh").read_text()
    assert f"rayproject/ray:{ray.__version__}" in text
    (torch_pin,) = re.findall(r"TORCH_SPEC=\$\{TORCH_SPEC:-(torch==[\d.]+)\}", install)
    assert f"ARG TORCH_SPEC={torch_pin}" in text
    assert text.index('"$TORCH_SPEC"') < text.index("-c constraints.txt")  # torch before anything pulls one
    (gpu_extras,) = re.findall(r'KIND=gpu; VLLM_SPEC=\$VLLM_CUDA_SPEC; EXTRAS="([^"]+)"', install)
    assert f'-e ".[{gpu_extras.replace(",test", "")}]"' in text and ".[all,cpu" not in text
    for line in text.splitlines():  # Docker takes no comments after an instruction
        assert line.startswith("#") or " # " not in line, line
    ignored = (INFRA.parent / ".dockerignore").read_text().split()
    assert {".venv", ".venv-vllm", ".cache", "mfpipe-out"} <= set(ignored)


def _all_manifests() -> list[dict]:
    docs = []
    for path in sorted(INFRA.rglob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def test_the_manifests_and_the_production_profile_agree():
    """One vLLM Deployment + Service; the name it serves is what the profile requests; the RayJob's
    config and `mfpipe submit` point llm.base_url at that Service, on its port."""
    from mfpipe.pipeline.submit import CLUSTER_LLM_URL

    docs = _all_manifests()
    vllm = [d for d in docs if d.get("kind") == "Deployment"
            and any("vllm" in c["image"] for c in d["spec"]["template"]["spec"]["containers"])]
    assert len(vllm) == 1, "exactly one vLLM Deployment in infra/"
    (container,) = vllm[0]["spec"]["template"]["spec"]["containers"]
    flags = [a.removeprefix("--") for a in container["args"]]
    args = dict(f.split("=", 1) for f in flags if "=" in f)
    production = load_config(overrides=["profile=production"])
    assert args["served-model-name"] == production.llm.model
    assert "enable-prefix-caching" in flags and args["reasoning-parser"] == "openai_gptoss"
    # The flags mfpipe uses when it starts the server itself are the same ones.
    local = {a.removeprefix("--").split("=")[0] for a in production.llm.server.args}
    assert {"reasoning-parser", "enable-prefix-caching", "max-model-len"} <= local
    services = [d for d in docs if d.get("kind") == "Service"
                and d["spec"]["selector"].items() <= vllm[0]["spec"]["template"]["metadata"]["labels"].items()]
    (service,) = services
    port = service["spec"]["ports"][0]
    assert port["targetPort"] == int(args["port"])
    url = f"http://{service['metadata']['name']}:{port['port']}/v1"
    assert CLUSTER_LLM_URL == url
    configmap = _one(_docs("kuberay/rayjob.yaml"), "ConfigMap")
    job_config = yaml.safe_load(configmap["data"]["config.yaml"])
    assert job_config["llm"]["base_url"] == url
    # The docs name that one manifest, and no other.
    text = " ".join(p.read_text() for p in [*(INFRA.parent / "docs").glob("*.md"), INFRA.parent / "README.md",
                                            INFRA / "README.md"])
    assert "infra/vllm/deployment.yaml" in text
    for gone in ("k8s.yaml", "gpt-oss-120b.yaml", "serve.sh"):
        assert gone not in text


def test_the_rayjob_config_file_validates(tmp_path):
    configmap = _one(_docs("kuberay/rayjob.yaml"), "ConfigMap")
    path = tmp_path / "config.yaml"
    path.write_text(configmap["data"]["config.yaml"])
    cfg = load_config(path)
    assert cfg.profile == "production" and cfg.llm.base_url
    job = _one(_docs("kuberay/rayjob.yaml"), "RayJob")
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]
    # Ray waits this long after SIGTERM before SIGKILL: enough for the run to drain and commit.
    assert float(env["RAY_JOB_STOP_WAIT_TIME_S"]) > cfg.run.drain_seconds


def test_the_production_lyrics_cover_the_languages_their_model_does():
    from mfpipe.lyrics.language import PARAKEET_V3_LANGUAGES

    lyrics = load_config(overrides=["profile=production"]).lyrics
    assert lyrics.model == "nvidia/parakeet-tdt-0.6b-v3" and lyrics.separation.enabled
    assert tuple(lyrics.language.asr_languages) == PARAKEET_V3_LANGUAGES
    assert lyrics.language.fallback_model  # other languages: a multilingual model, never English words


# ---------------------------------------------------------------- schemas

CRDS = Path(__file__).resolve().parent / "crds"


def _strict(schema: dict) -> dict:
    """The CRD's schema with unknown fields refused where it lists the fields (the API server prunes them
    silently, so a misspelt field would otherwise pass here and do nothing on a cluster)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out \
                and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@pytest.mark.parametrize("kind,crd", [("RayCluster", "ray.io_rayclusters.v1.json"),
                                      ("RayJob", "ray.io_rayjobs.v1.json")])
def test_kuberay_manifests_validate_against_the_crd_schemas(kind, crd):
    import json

    import jsonschema

    validator = jsonschema.Draft7Validator(_strict(json.loads((CRDS / crd).read_text())))
    docs = [d for d in _all_manifests() if d.get("kind") == kind]
    assert docs
    for doc in docs:
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, "\n".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors[:10])
    bad = {**docs[0], "spec": {**docs[0]["spec"], "authOption": {"mode": "token"}}}  # a misspelt field
    assert not validator.is_valid(bad)


def test_the_core_kinds_validate_against_the_kubernetes_schemas():
    import kubernetes_validate

    groups = ("v1", "apps", "networking.k8s.io")
    core = [d for d in _all_manifests() if d.get("apiVersion", "").partition("/")[0] in groups]
    assert {d["kind"] for d in core} >= {"Deployment", "Service", "ConfigMap", "NetworkPolicy"}
    for doc in core:
        kubernetes_validate.validate(doc, "1.33.0", strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**core[0], "spec": {"replica": 2}}, "1.33.0", strict=True)
