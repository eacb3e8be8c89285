"""The routers: training, prediction, scoring, models, algorithms, health."""
