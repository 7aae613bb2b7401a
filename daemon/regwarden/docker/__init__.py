"""Docker-side adapters: client config.json files, credential helpers and certs.d client certificates."""
