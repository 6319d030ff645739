"""Evaluation and reporting of a trained model: medical QA accuracy, validation loss, routing
analysis, and the run report."""
