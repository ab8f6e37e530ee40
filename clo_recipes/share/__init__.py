"""Shareable, reproducible runs.

- `lock`: pin every input of a recipe (hub commits, local file contents, package versions,
  sampled ids, hardware) into `<recipe>.lock.yaml`, itself a runnable recipe; check a run
  against it.
- `bundle`: export a finished run as a self-contained folder (lock, manifests, translated
  data, metrics, plots, weights) and seed a new run's data stages from one.
- `card`: the Hugging Face model card (README.md) of a bundle.
- `push`: upload a bundle to the hub.
- `runner`: what `clo-recipe run` calls to honour a lock file and `--from-bundle`.

Nothing here imports torch; `huggingface_hub` is imported only where the hub is asked.
"""
