"""The example registry, its routing cases and labelled prompts (the repository's
``examples/``, shipped in the wheel for `llmroute init`)."""
