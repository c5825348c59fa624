"""The property suite: one file per family of properties. Each property is stated here once:
its check (a function decorated with ``@stated``), its docstring (the statement), and its one
Hypothesis test (``test_<name> = <name>.test``), parametrized over target × dtype × device by
the xattn_ref pytest plugin. The runner, the CLI and :mod:`xattn_ref.checks` reach the same
functions.

    pytest properties --xattn-target package.module:name               # from a checkout
    pytest --pyargs xattn_ref.suite --xattn-target package.module:name # from an install

``xattn_ref/suite`` is this folder (a link in the checkout, files in the wheel). Without
``--xattn-target`` the built-in correct targets run. ``pytest`` runs each test through the
runner (one verdict per target, dtype and device); ``hypothesis fuzz`` fuzzes the same tests
(docs/fuzzing.md).
"""
