"""Consistency: low precision and accelerators agree with the same target in float64 on the
CPU, within the tolerance model."""

from xattn_ref.plugin import property_test

test_dtype_consistency = property_test("dtype_consistency")
test_device_consistency = property_test("device_consistency")
