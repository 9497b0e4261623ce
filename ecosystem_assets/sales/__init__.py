"""Scenario 1: the daily sales report."""
