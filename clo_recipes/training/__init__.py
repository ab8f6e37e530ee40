"""Model loading, trainable scope, chat-template rendering, the training loop and checkpoints.

Every module here imports torch/transformers lazily or at module level only where it is
itself imported lazily by a stage, so `validate` and `plan` stay torch-free.
"""
