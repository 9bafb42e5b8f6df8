"""Every module of the package imports on its own, first, in a fresh package state (no circular import that only a
particular import order hides)."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import importlib, pkgutil, sys
    import sapo_vl
    names = sorted(m.name for m in pkgutil.walk_packages(sapo_vl.__path__, "sapo_vl."))
    failed = []
    for name in names:
        for loaded in [m for m in sys.modules if m == "sapo_vl" or m.startswith("sapo_vl.")]:
            del sys.modules[loaded]
        try:
            importlib.import_module(name)
        except Exception as err:
            failed.append(f"{name}: {type(err).__name__}: {err}")
    print(len(names))
    print("\\n".join(failed))
""")


def test_every_module_imports_first_on_its_own():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    count, *failed = out.stdout.strip().splitlines()
    assert int(count) > 50 and not failed, "\n".join(failed)


def test_import_sapo_vl_and_the_command_table_import_no_torch():
    probe = "import sys, sapo_vl.commands; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-2000:]
