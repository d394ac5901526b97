"""The API reference: every public name of the package face documented (Args, Returns, an Example),
and the page pdoc renders from those docstrings (what CI builds into docs/reference)."""

import inspect
import subprocess
import sys

import dgn_engine as dgn

PUBLIC = [n for n in dgn.__all__ if n != "__version__"]


def test_every_public_name_has_a_captum_style_docstring():
    for name in PUBLIC:
        obj = getattr(dgn, name)
        doc = inspect.getdoc(obj) or ""
        assert "Example:" in doc, f"{name} has no example"
        if inspect.isfunction(obj) and name not in ("Target",):
            assert "Returns:" in doc, f"{name} says not what it returns"
            if inspect.signature(obj).parameters:
                assert "Args:" in doc, f"{name} has no Args section"
    assert "Args:" in inspect.getdoc(dgn.Engine.run) and "Returns:" in inspect.getdoc(dgn.Engine.run)


def test_the_reference_page_builds(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pdoc", "-d", "google", "-o", str(tmp_path), "dgn_engine", "!dgn_engine\\..*"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    page = (tmp_path / "dgn_engine.html").read_text()
    for name in PUBLIC:
        assert f'id="{name}"' in page, name
    assert 'id="Engine.run"' in page
