"""Consistency: low precision and accelerators agree with the same target in float64 on the
CPU, a model's attention implementations with each other and its cached decoding with its
full forward, within the tolerance model."""

from xattn_ref.plugin import property_test

test_dtype_consistency = property_test("dtype_consistency")
test_device_consistency = property_test("device_consistency")
test_implementation_consistency = property_test("implementation_consistency")
test_cached_decoding = property_test("cached_decoding")
