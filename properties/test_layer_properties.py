"""The property suite for layer targets (``--xattn-kind layer --xattn-dim E``): the
reference-free properties × dtype × device."""

from __future__ import annotations

import pytest

from xattn_ref._devices import ALL_DEVICES, ALL_DTYPES, dtype_name
from xattn_ref.layers import LAYER_PROPERTIES

XATTN_KIND = "layer"  # the plugin gives this module layer targets only


@pytest.mark.parametrize("device", ALL_DEVICES)
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=dtype_name)
@pytest.mark.parametrize("prop", list(LAYER_PROPERTIES))
def test_layer_property(xattn_session, xattn_target, prop, dtype, device):
    if xattn_target.kind != "layer":
        pytest.skip(
            f"layer properties: {xattn_target.name} is a {xattn_target.kind} (use --xattn-kind layer)"
        )
    result = xattn_session.run(xattn_target, prop, dtype, device)
    xattn_session.report(xattn_target, result)
