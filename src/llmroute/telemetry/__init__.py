"""The decision log, metrics, traces and shadow routing: llmroute's memory of what it
decided and how that turned out."""
