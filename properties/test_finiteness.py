"""Finiteness: output and gradients are finite, rows with no allowed key included."""

from xattn_ref.plugin import property_test

test_finite_output = property_test("finite_output")
test_finite_grad = property_test("finite_grad")
