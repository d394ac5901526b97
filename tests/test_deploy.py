"""The deployment image's install, without Docker: deploy/requirements.txt and the wheel into a fresh
venv (no torch), then the demo job and the engine-only verification there."""

import os
import subprocess
import venv

import pytest

pytestmark = pytest.mark.deploy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(os.environ.get("DGN_SKIP_DEPLOY_TEST") == "1", reason="DGN_SKIP_DEPLOY_TEST=1")
def test_runtime_install_runs_the_demo_without_torch(tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = str(env_dir / "bin" / "python")

    def sh(*args, **kw):
        result = subprocess.run(args, capture_output=True, text=True, **kw)
        assert result.returncode == 0, (args, result.stdout[-2000:], result.stderr[-3000:])
        return result.stdout

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    sh(py, "-m", "pip", "install", "-q", "-r", os.path.join(ROOT, "deploy", "requirements.txt"), env=env)
    sh(py, "-m", "pip", "install", "-q", "--no-deps", ROOT, env=env)  # a regular (non-editable) install
    cli = str(env_dir / "bin" / "dgn-engine")
    work = tmp_path / "work"
    work.mkdir()
    out = sh(cli, "run", "--all-classes", "--steps", "30", "--out", "results", "--quiet", cwd=work, env=env)
    assert "10 targets" in out and (work / "results" / "index.html").is_file()
    check = (
        "import importlib.util, sys; assert importlib.util.find_spec('torch') is None, 'torch installed'; "
        "import dgn_engine.demo as d; print(d.shipped_artifacts('untrained'))"
    )
    shipped = sh(py, "-c", check, cwd=work, env=env).strip()
    assert shipped.startswith(str(env_dir))  # the artifacts came with the installed package
    sh(cli, "verify", "--no-torch", "--artifacts", shipped, cwd=work, env=env)
    err = subprocess.run([cli, "export", "--out", "x"], capture_output=True, text=True, cwd=work, env=env)
    assert err.returncode == 2 and "pip install 'dgn-engine[export]'" in err.stderr


def test_ray_job_is_valid_and_its_entrypoint_parses():
    """KubeRay's RayJob has no schema offline: its two pod templates are validated as Pods against the
    Kubernetes schemas (strict), the fields KubeRay reads are checked, and the entrypoint is parsed with
    dgn-engine's own parser."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    import shlex

    import yaml

    from dgn_engine.cli.main import parser

    with open(os.path.join(ROOT, "deploy", "ray", "rayjob.yaml")) as f:
        job = yaml.safe_load(f)
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec, cluster = job["spec"], job["spec"]["rayClusterSpec"]
    with open(os.path.join(ROOT, "deploy", "requirements-ray.txt")) as f:
        pinned = [line.split("==")[1].strip() for line in f if line.startswith("ray")]
    assert cluster["rayVersion"] == pinned[0]  # every Ray process of a cluster runs one version
    head, workers = cluster["headGroupSpec"], cluster["workerGroupSpecs"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # no worker beside the driver
    for name, template in [("head", head["template"]), *((g["groupName"], g["template"]) for g in workers)]:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": template["spec"]}
        kubernetes_validate.validate(pod, "1.37.0", strict=True)
        mounts = {m["mountPath"] for c in template["spec"]["containers"] for m in c.get("volumeMounts", [])}
        assert "/dev/shm" in mounts  # Ray's object store
    gpus = sum(
        g["replicas"] * g["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] for g in workers
    )
    assert gpus == 8
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["dgn-engine", "run"]
    args = parser().parse_args(argv[1:])
    assert args.ray == "auto" and args.device == "cuda" and args.workers is None  # one worker per GPU
    assert args.artifacts == "/artifacts" and args.out.startswith("/results/")
