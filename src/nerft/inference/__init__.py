"""Answering with a trained model: the chat prompt of training (`chat`), the weights of a run
(`source`), engines (`engines`: hf, vllm, openai), structured-output constraints (`structured`),
prediction rows and their resumable file (`predictions`), and predicting over records (`predict`)."""

RAY_DEFAULT = "default"  # `--ray` given bare: Ray's own choice ($RAY_ADDRESS, the latest `ray start`, a new one)
