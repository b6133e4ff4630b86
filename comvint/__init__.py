"""ComVint domain logic: readers, prompts, LLM client, stages and dedup.

This package is pure Python and never imports Apache Beam; ``beam_pipeline``
wires it into a pipeline.
"""

__version__ = "0.1.0"
