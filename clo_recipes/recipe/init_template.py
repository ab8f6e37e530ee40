"""The starter recipe `clo-recipe init` writes."""

from __future__ import annotations

STARTER = """\
# yaml-language-server: $schema={schema}
# Run: clo-recipe run {path}
name: {name}
model:
  base: {model}
language: {language}
data:
  source: OpenAssistant/oasst1   # or a local JSONL/JSON/Parquet/CSV file
  format: oasst
  samples: {samples}
translation:
  backend: hf
  model: facebook/m2m100_1.2B
method:
  name: {method}          # clo (paper) or sft; beta 0.1 and sft_weight 0.5 are the paper defaults
  baselines: [{baselines}]
adapter:
  kind: {adapter}
  trainable: attention   # paper: attention layers only; `all` for very low-resource languages
train:
  epochs: 2
  learning_rate: 8.0e-6
  global_batch_size: 16
eval:
  suites: [fidelity, mc]
hardware: {hardware}
"""
