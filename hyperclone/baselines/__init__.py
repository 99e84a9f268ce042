"""Other ways to start a larger model from a smaller one, measured against HyperCloning."""
