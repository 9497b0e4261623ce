"""The fraud service: FastAPI app, prediction/feedback store, champion scoring."""
