"""How flows are served: the embedded worker (``python -m deployments.serve``) and the reaper."""
