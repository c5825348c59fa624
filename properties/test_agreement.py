"""Agreement: with the guarded float64 reference, and between the elements of a batch."""

from xattn_ref.plugin import property_test

test_reference_agreement = property_test("reference_agreement")
test_batch_independence = property_test("batch_independence")
test_no_input_mutation = property_test("no_input_mutation")
