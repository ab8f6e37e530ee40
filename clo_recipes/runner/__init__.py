"""The one door of every run (`door.py`): load, resolve, plan, hold to a lock, seed and launch.

Between the commands (above) and the stages and sharing (below); see `door.py`.
"""
