"""HTTP layer: thin routers, request and response models, dependencies and error handling."""
