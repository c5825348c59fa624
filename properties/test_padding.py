"""Padding: rows with no allowed key, masked keys, padded sequences and the side a model's
batch is padded on change nothing they must not."""

from xattn_ref.plugin import property_test

test_empty_rows_zero = property_test("empty_rows_zero")
test_padding_invariance = property_test("padding_invariance")
test_nan_padding_invariance = property_test("nan_padding_invariance")
test_compaction_equivalence = property_test("compaction_equivalence")
test_padding_side_invariance = property_test("padding_side_invariance")
