"""Every Prometheus metric regwarden exports, declared in one place (prefix `regwarden_`).

`Metrics` takes a registry so each test can use a fresh `CollectorRegistry`. Names follow
blackbox_exporter's where the meaning is shared. Label values never carry secrets.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from . import __version__

__all__ = ["Metrics"]

_PHASE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry

        # -- daemon
        self.build_info = Info("regwarden_build", "regwarden version.", registry=r)
        self.build_info.info({"version": __version__})
        self.start_time = Gauge("regwarden_start_time_seconds", "Unix time the daemon started.", registry=r)
        self.config_reload_success = Gauge(
            "regwarden_config_last_reload_successful", "1 if the last config (re)load succeeded.", registry=r)
        self.config_reload_time = Gauge(
            "regwarden_config_last_reload_success_timestamp_seconds", "Unix time of the last good config load.",
            registry=r)
        self.ready = Gauge("regwarden_ready", "1 when every component reports ready.", registry=r)
        self.dependency_up = Gauge(
            "regwarden_dependency_up",
            "1 if a dependency answered its last check (vault, docker; a registry: its last probe reached /v2/).",
            ["dependency", "name"], registry=r)

        # -- bus and sources
        self.events = Counter("regwarden_events_total", "Events seen, by source and kind.", ["source", "kind"],
                              registry=r)
        self.input_rejected = Counter(
            "regwarden_input_rejected_total",
            "Malformed input rejected (and kept where possible), by source and reason.",
            ["source", "reason"], registry=r)
        self.source_up = Gauge("regwarden_source_up", "1 while a source is running.", ["source"], registry=r)
        self.source_restarts = Counter("regwarden_source_restarts_total", "Source restarts after a failure.",
                                       ["source"], registry=r)
        self.source_lag = Gauge("regwarden_source_lag_seconds", "Observed minus event time of the last event.",
                                ["source"], registry=r)
        self.bus_depth = Gauge("regwarden_bus_queue_depth", "Events and Signals waiting on the event bus.", registry=r)
        self.handler_errors = Counter("regwarden_handler_errors_total", "Exceptions raised by bus handlers.",
                                      ["handler"], registry=r)

        # -- audit
        self.audit_records = Counter("regwarden_audit_records_total", "Records written to the audit trail.",
                                     registry=r)
        self.audit_gaps = Counter("regwarden_audit_gaps_total", "Audit gap records written.", ["source"], registry=r)
        self.audit_witness_writes = Counter(
            "regwarden_audit_witness_writes_total", "Chain heads written to Vault, by outcome (ok, error).",
            ["outcome"], registry=r)
        self.audit_witness_seq = Gauge(
            "regwarden_audit_witness_seq", "Seq of the last chain head Vault holds for this host.", registry=r)
        self.audit_witness_last_success = Gauge(
            "regwarden_audit_witness_last_success_timestamp_seconds",
            "When a chain head was last written to Vault (Unix time).", registry=r)
        self.audit_witness_mismatches = Counter(
            "regwarden_audit_witness_mismatches_total",
            "Times the local trail did not hold the chain head Vault witnessed.", registry=r)
        self.audit_write_errors = Counter("regwarden_audit_write_errors_total", "Failed audit writes.", registry=r)

        # -- vault and credentials
        self.vault_up = Gauge("regwarden_vault_up", "1 if Vault answered the last request.", registry=r)
        self.vault_token_expiry = Gauge("regwarden_vault_token_expiry_timestamp_seconds",
                                        "Unix time the Vault token expires.", registry=r)
        self.vault_requests = Counter("regwarden_vault_requests_total", "Requests sent to Vault.",
                                      ["operation", "outcome"], registry=r)
        self.vault_node_failures = Counter(
            "regwarden_vault_node_failures_total",
            "Requests a Vault node failed (unreachable, sealed, 5xx, 429); the client moved on or backed off.",
            ["node"], registry=r)
        self.vault_node_up = Gauge(
            "regwarden_vault_node_up",
            "1 if the node answered the last request sent to it, 0 while it is failing (skipped with back-off).",
            ["node"], registry=r)
        self.credential_version = Gauge("regwarden_credential_applied_version",
                                        "KV version applied to the Docker targets.", ["credential"], registry=r)
        self.credential_applied_time = Gauge("regwarden_credential_applied_timestamp_seconds",
                                             "Unix time the credential was last applied.", ["credential"], registry=r)
        self.credential_verified_time = Gauge("regwarden_credential_verified_timestamp_seconds",
                                              "Unix time the credential was last verified.", ["credential"], registry=r)
        self.credential_expiry = Gauge("regwarden_credential_expiry_timestamp_seconds",
                                       "Unix time the credential expires (certificates), if known.", ["credential"],
                                       registry=r)
        self.credential_stale_since = Gauge("regwarden_credential_stale_since_timestamp_seconds",
                                            "Unix time since the credential could not be refreshed; 0 if fresh.",
                                            ["credential"], registry=r)
        self.credential_applies = Counter("regwarden_credential_applies_total", "Apply attempts by outcome.",
                                          ["credential", "outcome"], registry=r)
        self.rotations = Counter("regwarden_rotations_total", "Rotations by outcome.", ["credential", "outcome"],
                                 registry=r)
        self.rotation_duration = Histogram("regwarden_rotation_duration_seconds", "Rotation duration.",
                                           ["credential"], buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800),
                                           registry=r)
        self.rotation_last_success = Gauge("regwarden_rotation_last_success_timestamp_seconds",
                                           "Unix time of the last successful rotation.", ["credential"], registry=r)

        # -- probes (blackbox_exporter names where shared)
        self.probe_success = Gauge("regwarden_probe_success", "1 if the last probe succeeded.", ["registry"],
                                   registry=r)
        self.probe_duration = Gauge("regwarden_probe_duration_seconds", "Duration of each probe phase.",
                                    ["registry", "phase"], registry=r)
        self.probe_ssl_expiry = Gauge("regwarden_probe_ssl_earliest_cert_expiry",
                                      "Unix time of the earliest certificate expiry in the chain.", ["registry"],
                                      registry=r)
        self.probe_http_status = Gauge("regwarden_probe_http_status_code", "HTTP status of GET /v2/.",
                                       ["registry"], registry=r)
        self.probe_anonymous = Gauge("regwarden_probe_anonymous_access", "1 if /v2/ answered without credentials.",
                                     ["registry"], registry=r)
        self.probe_auth_success = Gauge("regwarden_probe_auth_success", "1 if the configured credential worked.",
                                        ["registry"], registry=r)
        self.probe_tls_version = Gauge("regwarden_probe_tls_version_info", "TLS version of the last probe (1).",
                                       ["registry", "version"], registry=r)
        self.probe_failed_phase = Gauge("regwarden_probe_failed_phase",
                                        "1 for the phase the last probe failed in, 0 for the others.",
                                        ["registry", "phase"], registry=r)
        self.probe_realm_ssl_expiry = Gauge("regwarden_probe_token_realm_ssl_earliest_cert_expiry",
                                            "Unix time of the earliest certificate expiry in the token realm's chain.",
                                            ["registry"], registry=r)
        self.probe_http_ssl = Gauge("regwarden_probe_http_ssl", "1 if the registry is reached over TLS.",
                                    ["registry"], registry=r)
        self.probe_interval = Gauge("regwarden_probe_interval_seconds",
                                    "Current probe interval (shorter while failing).", ["registry"], registry=r)
        self.probes = Counter("regwarden_probes_total", "Probes run, by verdict.", ["registry", "verdict"],
                              registry=r)
        self.engine_audit_success = Gauge("regwarden_engine_audit_success",
                                          "1 if the last audit of the engine's registry config ran.", registry=r)
        self.engine_audit_findings = Gauge("regwarden_engine_audit_findings",
                                           "Findings of the last engine registry-config audit, by kind.", ["kind"],
                                           registry=r)
        self.engine_registry_config_changes = Counter(
            "regwarden_engine_registry_config_changes_total", "Changes of the engine's registry config seen.",
            registry=r)

        # -- posture
        self.posture_finding = Gauge(
            "regwarden_posture_finding", "1 while a posture check finds a problem, 0 when it passes.",
            ["registry", "check", "severity"], registry=r)
        self.posture_runs = Counter("regwarden_posture_runs_total", "Posture runs by registry and result.",
                                    ["registry", "result"], registry=r)
        self.posture_check_errors = Counter(
            "regwarden_posture_check_errors_total",
            "Posture checks that could not finish (no answer, or an answer that made no sense), by check.",
            ["registry", "check"], registry=r)
        self.posture_last_run = Gauge("regwarden_posture_last_run_timestamp_seconds",
                                      "Unix time of the last posture run.", ["registry"], registry=r)
        self.posture_default_logins = Counter(
            "regwarden_posture_default_login_attempts_total", "Well-known default logins tried.", ["registry"],
            registry=r)

        # -- image checks
        self.image_checks = Counter("regwarden_image_checks_total", "Checks of pushed images, by check and verdict.",
                                    ["check", "verdict"], registry=r)
        self.image_check_errors = Counter(
            "regwarden_image_check_errors_total",
            "Image checks that met bad input (registry answer, signature manifest, scanner), by check and reason.",
            ["check", "reason"], registry=r)
        self.image_check_queue = Gauge("regwarden_image_check_queue", "Image checks waiting in the queue.", ["check"],
                                       registry=r)

        # -- alerting
        self.alerts_active = Gauge("regwarden_alerts_active", "Alerts currently firing.", ["severity"], registry=r)
        self.notifications = Counter("regwarden_notifications_total", "Notification attempts by sink and outcome.",
                                     ["sink", "outcome"], registry=r)
        self.outbox_depth = Gauge("regwarden_outbox_depth", "Notifications waiting for delivery.", ["sink"],
                                  registry=r)
        self.sink_up = Gauge("regwarden_sink_up", "1 if the sink is usable (not broken).", ["sink"], registry=r)
        self.notification_latency = Histogram(
            "regwarden_notification_latency_seconds", "Signal to delivered notification.", ["sink"],
            buckets=(*_PHASE_BUCKETS, 30, 60, 300), registry=r)
