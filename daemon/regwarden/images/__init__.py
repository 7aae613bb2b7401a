"""Checks of pushed images: cosign signatures (`signature`), Trivy reports (`trivy`), the scanner
subprocess (`scanner`) and the component that runs them from registry notifications (`component`)."""
