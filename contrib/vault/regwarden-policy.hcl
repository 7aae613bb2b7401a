# Vault (or OpenBao) policy for the regwarden daemon: exactly what it needs, nothing more.
#
# Layout it assumes (the defaults of config.example.toml; change the paths here if yours differ):
#   secret/regwarden/<name>          credentials regwarden only watches (provider "vault-kv"); someone
#                                    else writes them, so the daemon can read but never change them
#   secret/regwarden/rotated/<name>  credentials regwarden rotates (htpasswd, vault-pki, command): it
#                                    publishes new versions with check-and-set and its bookkeeping
#                                    (rotated_at, by, slot) in the key's custom_metadata
#   secret/regwarden/locks/<name>    rotation locks ([vault].lock_path = "secret/regwarden/locks")
#   secret/regwarden/audit-heads/<host>  each host's audit chain heads ([audit].witness_path)
#   pki/                             the PKI mount of vault-pki credentials, role "regwarden-client"
#
# Nothing here can list, delete or destroy versions, read other teams' secrets, or change policies.
# Attach it to the AppRole (or token, or cert role) every regwarden host logs in with:
#   vault policy write regwarden contrib/vault/regwarden-policy.hcl
#   vault write auth/approle/role/regwarden token_policies=regwarden token_ttl=1h token_max_ttl=24h

# Watch: read every credential's current version and metadata (current_version, custom_metadata).
path "secret/data/regwarden/*" {
  capabilities = ["read"]
}
path "secret/metadata/regwarden/*" {
  capabilities = ["read"]
}

# Rotate: publish a new version (check-and-set: create for the first version, update afterwards)
# and update the bookkeeping in custom_metadata.
path "secret/data/regwarden/rotated/*" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/regwarden/rotated/*" {
  capabilities = ["create", "read", "update"]
}

# Rotation locks: one KV entry per credential, taken and released with check-and-set.
path "secret/data/regwarden/locks/*" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/regwarden/locks/*" {
  capabilities = ["read"]
}

# Audit chain witness: each host writes its chain head as a new version of its key (KV keeps the
# history; nothing here may delete versions or change the key's metadata, so a host cannot erase what
# it witnessed). "read" is what the watch rule above already grants there (a more specific rule replaces
# it, so it is repeated): the daemon compares its trail with the last head at start, and
# `regwarden audit verify --witness` reads them all.
path "secret/data/regwarden/audit-heads/*" {
  capabilities = ["create", "read", "update"]
}

# vault-pki credentials: issue client certificates for the role, revoke the previous one.
path "pki/issue/regwarden-client" {
  capabilities = ["update"]
}
path "pki/revoke" {
  capabilities = ["update"]
}

# The daemon's own token: renewed at 2/3 of its TTL, looked up at start (also in Vault's "default"
# policy; listed here so that a token created with no_default_policy still works).
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

# `regwarden doctor` asks which of the paths above this token may use (it reveals nothing else; Vault's
# default policy grants the same).
path "sys/capabilities-self" {
  capabilities = ["update"]
}
