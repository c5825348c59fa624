"""The zoo: attention code the tests, the main job and the sweeps run, kept out of the machinery.

- :mod:`~xattn_ref.zoo.kernels`: correct kernels, written in different ways;
- :mod:`~xattn_ref.zoo.known_bad`: kernels and layers with one realistic defect each, and the
  property that catches it;
- :mod:`~xattn_ref.zoo.adapters`: real attention code (SDPA's backends, FlexAttention, torch's
  and Hugging Face's layers) as targets;
- :mod:`~xattn_ref.zoo.builtins`: the built-in targets and the verdict each should get.

The loader, the runner and the checks never import it; the front ends load the built-ins by spec.
"""
