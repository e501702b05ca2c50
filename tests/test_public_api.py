import autolabel


def test_every_public_name_resolves():
    for name in autolabel.__all__:
        assert getattr(autolabel, name) is not None, name


def test_importing_the_package_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, autolabel, autolabel.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
