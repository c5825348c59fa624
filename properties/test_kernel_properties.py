"""The property suite for kernel targets: every property × dtype × device.

Targets: ``--xattn-target`` / ``$XATTN_TARGET``, or the built-in correct kernels. Devices and
dtypes that this machine lacks are reported as skipped, with the reason.
"""

from __future__ import annotations

import pytest

from xattn_ref._devices import ALL_DEVICES, ALL_DTYPES, dtype_name
from xattn_ref.checks import KERNEL_PROPERTIES

XATTN_KIND = "kernel"  # the plugin gives this module kernel targets only


@pytest.mark.parametrize("device", ALL_DEVICES)
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=dtype_name)
@pytest.mark.parametrize("prop", list(KERNEL_PROPERTIES))
def test_kernel_property(xattn_session, xattn_target, prop, dtype, device):
    if xattn_target.kind != "kernel":
        pytest.skip(f"{prop} here is for kernel targets; {xattn_target.name} is a {xattn_target.kind}")
    result = xattn_session.run(xattn_target, prop, dtype, device)
    xattn_session.report(xattn_target, result)
