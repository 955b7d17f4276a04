"""SMTP: the inbound MTA, submission, the relay queue worker and DSNs (issue 5). See docs/smtp.md.

Entry points (each returns a Stoppable with `async stop()`):
    mssante.smtp.server.start_mta(services)            # operator to operator, mutual TLS
    mssante.smtp.server.start_submission(services)     # STARTTLS (587) and implicit TLS (465), AUTH
    mssante.smtp.relay.start_relay_worker(services)    # delivers the queue to other operators
then `await mssante.smtp.delivery.close_committer(services)` once the listeners are stopped.
"""
