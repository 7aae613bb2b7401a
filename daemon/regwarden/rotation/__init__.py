"""Scheduled, fleet-coordinated rotation of credentials regwarden produces (DESIGN.md, "Credentials")."""
