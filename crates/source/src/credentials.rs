//! Credentials from a `pullSecretRef`: a Secret in the Transform's namespace. Values never
//! reach an error message or a log line; only key names and hosts do.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::FetchError;

/// What a Secret offers.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SecretData {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) type_: Option<String>,
    pub(crate) data: BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for SecretData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretData")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("type", &self.type_)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Username and password (or token as password).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Basic {
    pub(crate) username: String,
    pub(crate) password: String,
}

impl std::fmt::Debug for Basic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Basic")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Reads the Secret `name` in `namespace`.
pub(crate) async fn read(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<SecretData, FetchError> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(FetchError::Kube)?
        .ok_or_else(|| FetchError::SecretNotFound {
            namespace: namespace.into(),
            name: name.into(),
        })?;
    Ok(SecretData {
        namespace: namespace.into(),
        name: name.into(),
        type_: secret.type_,
        data: secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect(),
    })
}

impl SecretData {
    pub(crate) fn bad(&self, reason: impl Into<String>) -> FetchError {
        FetchError::BadSecret {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            reason: reason.into(),
        }
    }

    pub(crate) fn text(&self, key: &str) -> Result<Option<String>, FetchError> {
        self.data
            .get(key)
            .map(|v| {
                String::from_utf8(v.clone()).map_err(|_| self.bad(format!("{key} is not UTF-8")))
            })
            .transpose()
    }

    /// `username`/`password` keys (basic-auth Secrets), or a `token` key (password only).
    pub(crate) fn basic(&self) -> Result<Option<Basic>, FetchError> {
        let username = self.text("username")?;
        let password = self.text("password")?;
        let token = self.text("token")?;
        Ok(match (username, password, token) {
            (Some(username), Some(password), _) => Some(Basic { username, password }),
            (username, None, Some(token)) => Some(Basic {
                username: username.unwrap_or_else(|| "pequod".into()),
                password: token,
            }),
            (Some(_), None, None) => return Err(self.bad("has username but no password")),
            (None, Some(_), None) => return Err(self.bad("has password but no username")),
            (None, None, None) | (None, Some(_), Some(_)) => None,
        })
    }

    /// Registry credentials for `host`: from `.dockerconfigjson` (or `.dockercfg`) when the
    /// Secret has one, else from `username`/`password`.
    pub(crate) fn registry(&self, host: &str) -> Result<Basic, FetchError> {
        if let Some(json) = self
            .data
            .get(".dockerconfigjson")
            .or_else(|| self.data.get(".dockercfg"))
        {
            return self.docker_config(json, host);
        }
        self.basic()?.ok_or_else(|| {
            self.bad(
                "has neither .dockerconfigjson nor username/password keys (expected a \
                 kubernetes.io/dockerconfigjson or kubernetes.io/basic-auth Secret)",
            )
        })
    }

    fn docker_config(&self, json: &[u8], host: &str) -> Result<Basic, FetchError> {
        #[derive(serde::Deserialize)]
        struct Entry {
            auth: Option<String>,
            username: Option<String>,
            password: Option<String>,
        }
        #[derive(serde::Deserialize)]
        struct Config {
            auths: Option<BTreeMap<String, Entry>>,
        }
        let parsed: serde_json::Value = serde_json::from_slice(json)
            .map_err(|_| self.bad(".dockerconfigjson is not valid JSON"))?;
        // `.dockercfg` is the legacy form without the `auths` wrapper.
        let auths: BTreeMap<String, Entry> = match serde_json::from_value::<Config>(parsed.clone())
        {
            Ok(Config { auths: Some(auths) }) => auths,
            _ => serde_json::from_value(parsed)
                .map_err(|_| self.bad(".dockerconfigjson has no auths object"))?,
        };
        let (_, entry) = auths
            .iter()
            .find(|(key, _)| registry_host(key) == host)
            .ok_or_else(|| {
                let hosts: Vec<&str> = auths.keys().map(|k| registry_host(k)).collect();
                self.bad(format!(
                    "has no auths entry for {host} (it has: {})",
                    hosts.join(", ")
                ))
            })?;
        if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
            return Ok(Basic {
                username: username.clone(),
                password: password.clone(),
            });
        }
        let auth = entry
            .auth
            .as_deref()
            .ok_or_else(|| self.bad(format!("auths entry for {host} has no auth")))?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| self.bad(format!("auths entry for {host}: auth is not base64")))?;
        let (username, password) = decoded.split_once(':').ok_or_else(|| {
            self.bad(format!(
                "auths entry for {host}: auth is not username:password"
            ))
        })?;
        Ok(Basic {
            username: username.into(),
            password: password.into(),
        })
    }
}

/// The host of a docker config key (`https://host/v1/` → `host`).
fn registry_host(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(entries: &[(&str, &str)]) -> SecretData {
        SecretData {
            namespace: "ns".into(),
            name: "creds".into(),
            type_: None,
            data: entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[test]
    fn docker_config_entries_by_host() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let json = format!(
            r#"{{"auths":{{"https://127.0.0.1:5000/v1/":{{"auth":"{auth}"}},"other.io":{{"username":"bob","password":"pw"}}}}}}"#
        );
        let s = secret(&[(".dockerconfigjson", &json)]);
        let basic = s.registry("127.0.0.1:5000").unwrap();
        assert_eq!(
            (basic.username.as_str(), basic.password.as_str()),
            ("alice", "s3cret")
        );
        assert_eq!(s.registry("other.io").unwrap().username, "bob");
        let err = s.registry("missing.io").unwrap_err().to_string();
        assert!(err.contains("127.0.0.1:5000, other.io"), "{err}");
        assert!(!err.contains("s3cret"));
        assert!(!format!("{basic:?}").contains("s3cret"));
    }

    #[test]
    fn basic_auth_and_token_keys() {
        let s = secret(&[("username", "u"), ("password", "p")]);
        assert_eq!(s.registry("h").unwrap().password, "p");
        let t = secret(&[("token", "tok")]);
        assert_eq!(t.basic().unwrap().unwrap().password, "tok");
        assert!(secret(&[("username", "u")]).basic().is_err());
        assert!(secret(&[("other", "x")]).registry("h").is_err());
    }
}
