"""Use cases: training, inference and the registry's resources, called by the routers."""
