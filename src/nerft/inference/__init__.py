"""Answering with a trained model: the chat prompt of training (`chat`), the weights of a run
(`source`), engines (`engines`: hf, vllm, openai), structured-output constraints (`structured`),
prediction rows and their resumable file (`predictions`), and predicting over records (`predict`)."""
