"""The deployment image's install, without Docker: deploy/requirements.txt and the wheel into a fresh
venv (no torch), then the demo job and the engine-only verification there."""

import os
import subprocess
import venv

import pytest

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
