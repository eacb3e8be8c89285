"""Long work in worker processes: the runner that starts, limits, times and kills them."""
