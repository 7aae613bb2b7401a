"""The tamper-evident audit trail: parsers into Events, the hash-chained writer, detectors, CLI."""
