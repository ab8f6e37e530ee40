"""Hardware: what this machine has (detect), whether a run fits (memory), how the training
stage is started on several GPUs (launch), and the global/micro batch split (batch).

Nothing here imports torch at module level: `plan` uses it and must answer in well under a second.
"""
