"""SavedModels: export (TF Serving layout), loading without the training code, and streaming a
particle stack through one."""
