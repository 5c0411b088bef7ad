"""The layout contract: platform/ is a source root, never a package shadowing the stdlib module."""

import sysconfig
from pathlib import Path

from tests.helpers import ROOT, manage


def test_stdlib_platform_module_is_not_shadowed_in_the_django_process(settings):
    import platform

    assert Path(platform.__file__).parent == Path(sysconfig.get_paths()["stdlib"])
    assert platform.system()  # would raise AttributeError if our folder shadowed it
    assert "cytoloop" in settings.INSTALLED_APPS


def test_no_platform_package_exists():
    assert not (ROOT / "platform" / "__init__.py").exists()
    assert (ROOT / "platform" / "cytoloop" / "__init__.py").exists()


def test_manage_py_process_sees_the_stdlib_platform_module():
    result = manage(
        "shell", "-c",
        "import platform, cytoloop; print(platform.system(), platform.python_version(), platform.__file__)",
    )
    assert result.returncode == 0, result.stderr
    system, version, path = result.stdout.split()[-3:]
    here = __import__("platform")
    assert (system, version) == (here.system(), here.python_version())  # answered as ours does
    assert Path(path).parent == Path(sysconfig.get_paths()["stdlib"])


def test_top_level_layout_matches_the_design_card():
    for name in ("manage.py", "pyproject.toml", "platform", "annotation", "training",
                 "inference", "templates", "static", "tests", "docker"):
        assert (ROOT / name).exists(), name
