"""`runbook serve`: alerts and schedules become guarded runs of the normal engine.

intake: an HTTP request -> decisions (rules.py matches, guards.py decides, inbox.py records durably);
supervisor.py starts and resumes runs as child processes of the CLI; scheduler.py fires cron rules;
app.py is the HTTP surface; metrics.py the Prometheus registry.
"""
