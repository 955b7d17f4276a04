"""Logging, metrics and the audit trail. None of them ever carries message content or secrets."""
