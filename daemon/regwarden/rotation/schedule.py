"""When is a rotation due? Pure functions over the credential's config and its Vault bookkeeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ..config import CredentialConfig

__all__ = ["cert_lifetime", "next_due"]


def cert_lifetime(certificate_pem: str) -> tuple[datetime, datetime]:
    """(not_before, not_after) of a PEM certificate, in UTC."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(certificate_pem.encode())
    return cert.not_valid_before_utc, cert.not_valid_after_utc


def next_due(credential: CredentialConfig, rotated_at: datetime | None,
             validity: tuple[datetime, datetime] | None = None) -> datetime:
    """The earliest time the next rotation is due (the past means now).

    Never rotated (no bookkeeping in Vault yet): due at once. Certificates: also due at `renew_at`
    of their lifetime. The earliest of the applicable rules wins.
    """
    if rotated_at is None:
        return datetime.fromtimestamp(0, UTC)
    candidates: list[datetime] = []
    if credential.rotate_every is not None:
        candidates.append(rotated_at + credential.rotate_every)
    if credential.rotate_cron is not None:
        from apscheduler.triggers.cron import CronTrigger

        trigger = CronTrigger.from_crontab(credential.rotate_cron, timezone=UTC)
        fire = trigger.get_next_fire_time(None, rotated_at + timedelta(seconds=1))
        if fire is not None:
            candidates.append(fire)
    if validity is not None and credential.pki is not None:
        not_before, not_after = validity
        candidates.append(not_before + (not_after - not_before) * credential.pki.renew_at)
    if not candidates:
        return datetime.max.replace(tzinfo=UTC)
    return min(candidates)
