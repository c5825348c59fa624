"""The property suite, shipped in the wheel: ``pytest --pyargs xattn_ref.suite``.

Every property of each target's kind × dtype × device, through the xattn_ref pytest plugin:
``--xattn-target`` (or ``$XATTN_TARGET``) names the target, else the built-in correct targets
run. See :mod:`xattn_ref.plugin` for the options.
"""
