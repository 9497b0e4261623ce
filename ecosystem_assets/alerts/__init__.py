"""Alerts: every failed run and every failing check that matters reaches ALERT_RECIPIENTS, once per incident.

- `messages.py`: what an alert says (subject, body, UI links, the first thing to try, the
  troubleshooting anchor), secrets scrubbed; plain Python.
- `incidents.py`: which evaluations open or close an incident, the sensor's cursor state, and when a
  failed run is the same failure as the one before; plain Python.
- `sensors.py`: the Dagster wiring (a run-failure sensor over every job, a sensor over the check
  evaluations), sending through the project's mailer (`resources/mail.py`).
"""
