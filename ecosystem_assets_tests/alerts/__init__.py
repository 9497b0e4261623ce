"""Tests of the alerts (ecosystem_assets/alerts/)."""
