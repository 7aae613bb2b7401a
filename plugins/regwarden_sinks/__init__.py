"""Built-in alert sinks, registered through the `regwarden.sinks` entry-point group like any plugin."""
