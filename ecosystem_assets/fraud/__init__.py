"""Scenario 3: fraud model, live service, monitoring and closed-loop retraining."""
