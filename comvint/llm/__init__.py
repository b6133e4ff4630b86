"""The LLM layer: config, retry policy, rate limits, response cache, client and batch runner."""
