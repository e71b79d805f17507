"""The language model: one backend protocol, its implementations (embedded, OpenAI-compatible
server, in-process vLLM), token counting, the Llama 2-chat format and serving helpers."""
