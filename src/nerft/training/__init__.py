"""Training with LLaMA-Factory: the `train` flow, launch commands and environment (`launch`), the
machine's attention and kernel choices (`kernels`), sequence lengths (`lengths`), run summaries
(`summary`) and merging adapters (`export`)."""
