//! Where CUE module dependencies live: CUE's registry configuration in `CUE_REGISTRY` syntax,
//! resolved the way `cue` resolves it, so one setting serves the operator and the `cue` CLI.
//!
//! `host[:port][/prefix][+insecure|+secure]` is the catch-all registry; `module/prefix=registry`
//! entries route modules under that path prefix (whole path elements; the longest wins);
//! `none` as a registry disables a prefix. A module `example.com/policy@v0` at `v0.1.0` lives in
//! the repository `prefix/example.com/policy` with the tag `v0.1.0`. Without a suffix,
//! `localhost`, `127.0.0.1` and `[::1]` are reached over plain HTTP, anything else over HTTPS.

use std::collections::BTreeMap;

/// CUE's default catch-all registry.
pub const DEFAULT_REGISTRY: &str = "registry.cue.works";

/// One registry: host, repository prefix, transport.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Registry {
    host: String,
    prefix: String,
    insecure: bool,
}

/// A parsed registry configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CueRegistry {
    /// `None`: the catch-all is `none`.
    catch_all: Option<Registry>,
    /// Module path prefix → registry (`None`: disabled).
    prefixes: BTreeMap<String, Option<Registry>>,
}

/// Where one module version is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// Registry host (with port).
    pub host: String,
    /// Repository inside the registry.
    pub repository: String,
    /// The tag: the version.
    pub tag: String,
    /// Plain HTTP.
    pub insecure: bool,
}

impl Default for CueRegistry {
    fn default() -> Self {
        Self::parse("").unwrap_or(Self {
            catch_all: None,
            prefixes: BTreeMap::new(),
        })
    }
}

impl CueRegistry {
    /// Parses `CUE_REGISTRY` syntax; empty means [`DEFAULT_REGISTRY`].
    pub fn parse(config: &str) -> Result<Self, String> {
        let mut catch_all = None;
        let mut prefixes = BTreeMap::new();
        let config = config.trim();
        if !config.is_empty() {
            for part in config.split(',') {
                let part = part.trim();
                match part.split_once('=') {
                    None if part.is_empty() => return Err("empty registry entry".into()),
                    None => {
                        if catch_all.is_some() {
                            return Err("more than one catch-all registry".into());
                        }
                        catch_all = Some(registry(part)?);
                    }
                    Some((prefix, value)) => {
                        let prefix = prefix.trim();
                        if prefix.is_empty() || prefix.contains('@') || prefix.ends_with('/') {
                            return Err(format!("invalid module prefix {prefix:?}"));
                        }
                        if value.trim().is_empty() {
                            return Err(format!("empty registry for prefix {prefix:?}"));
                        }
                        if prefixes
                            .insert(prefix.to_owned(), registry(value.trim())?)
                            .is_some()
                        {
                            return Err(format!("duplicate module prefix {prefix:?}"));
                        }
                    }
                }
            }
        }
        let catch_all = match catch_all {
            Some(registry) => registry,
            None => registry(DEFAULT_REGISTRY)?,
        };
        Ok(Self {
            catch_all,
            prefixes,
        })
    }

    /// Where `module` (with or without its `@vN`) at `version` lives; `None` when its prefix
    /// is disabled with `none`.
    pub fn resolve(&self, module: &str, version: &str) -> Option<Location> {
        let path = module.split_once('@').map_or(module, |(base, _)| base);
        let registry = self
            .prefixes
            .iter()
            .filter(|(prefix, _)| {
                path == prefix.as_str()
                    || path
                        .strip_prefix(prefix.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or(self.catch_all.as_ref(), |(_, registry)| registry.as_ref())?;
        let repository = if registry.prefix.is_empty() {
            path.to_owned()
        } else {
            format!("{}/{path}", registry.prefix)
        };
        Some(Location {
            host: registry.host.clone(),
            repository,
            tag: version.to_owned(),
            insecure: registry.insecure,
        })
    }
}

/// `host[/prefix][+insecure|+secure]` or `none`.
fn registry(text: &str) -> Result<Option<Registry>, String> {
    if text == "none" {
        return Ok(None);
    }
    let (reference, insecure) = match text.rsplit_once('+') {
        Some((reference, "insecure")) => (reference, Some(true)),
        Some((reference, "secure")) => (reference, Some(false)),
        Some((_, suffix)) => {
            return Err(format!(
                "registry {text:?}: unknown suffix +{suffix}, need +insecure or +secure"
            ));
        }
        None => (text, None),
    };
    let (host, prefix) = reference.split_once('/').unwrap_or((reference, ""));
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if !valid_host {
        return Err(format!("registry {text:?}: invalid host {host:?}"));
    }
    if prefix.contains(['@', ':']) || prefix.ends_with('/') || prefix.contains("//") {
        return Err(format!(
            "registry {text:?}: a registry has no tag or digest, and its repository prefix is a path"
        ));
    }
    Ok(Some(Registry {
        host: host.to_owned(),
        prefix: prefix.to_owned(),
        insecure: insecure.unwrap_or_else(|| is_loopback(host)),
    }))
}

/// `localhost`, `127.0.0.1` and `[::1]`, with or without a port: the hosts CUE reaches over
/// plain HTTP unless told otherwise.
pub fn is_loopback(host: &str) -> bool {
    let name = if let Some(bracketed) = host.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        host.split(':').next().unwrap_or_default()
    };
    matches!(name, "localhost" | "127.0.0.1" | "::1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::unnecessary_wraps)] // compared with `resolve`, which returns an Option
    fn location(host: &str, repository: &str, insecure: bool) -> Option<Location> {
        Some(Location {
            host: host.into(),
            repository: repository.into(),
            tag: "v0.1.0".into(),
            insecure,
        })
    }

    #[test]
    fn the_default_is_cues_central_registry() {
        let registry = CueRegistry::parse("").unwrap();
        assert_eq!(
            registry.resolve("example.com/policy@v0", "v0.1.0"),
            location("registry.cue.works", "example.com/policy", false)
        );
        assert_eq!(registry, CueRegistry::default());
    }

    #[test]
    fn prefixes_match_whole_path_elements_and_the_longest_wins() {
        let registry = CueRegistry::parse(
            "myorg.com=127.0.0.1:5000/m,myorg.com/team=reg.example/t+insecure,\
             blocked.example=none,catch.example:443/all",
        )
        .unwrap();
        assert_eq!(
            registry.resolve("myorg.com/foo/bar@v0", "v0.1.0"),
            location("127.0.0.1:5000", "m/myorg.com/foo/bar", true)
        );
        assert_eq!(
            registry.resolve("myorg.com/team/x@v0", "v0.1.0"),
            location("reg.example", "t/myorg.com/team/x", true)
        );
        assert_eq!(
            registry.resolve("myorg.community/x@v0", "v0.1.0"),
            location("catch.example:443", "all/myorg.community/x", false),
            "myorg.com does not match myorg.community"
        );
        assert_eq!(registry.resolve("blocked.example/x@v0", "v0.1.0"), None);
        assert_eq!(
            registry.resolve("blocked.examples/x@v0", "v0.1.0"),
            location("catch.example:443", "all/blocked.examples/x", false)
        );
    }

    #[test]
    fn loopback_is_insecure_unless_told_otherwise() {
        for (config, insecure) in [
            ("localhost:5000", true),
            ("127.0.0.1:5000/p", true),
            ("[::1]:5000", true),
            ("127.0.0.1:5000+secure", false),
            ("registry.example+insecure", true),
            ("registry.example", false),
        ] {
            let resolved = CueRegistry::parse(config)
                .unwrap()
                .resolve("a.example/x", "v0.1.0")
                .unwrap();
            assert_eq!(resolved.insecure, insecure, "{config}");
        }
        assert_eq!(
            CueRegistry::parse("none")
                .unwrap()
                .resolve("a.example/x", "v1.0.0"),
            None
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (config, expected) in [
            ("a.example,b.example", "more than one catch-all"),
            (
                "x.example=a.example,x.example=b.example",
                "duplicate module prefix",
            ),
            ("a.example+fast", "unknown suffix +fast"),
            ("=a.example", "invalid module prefix"),
            ("x.example=", "empty registry"),
            ("a.example/p:v1", "no tag or digest"),
            ("a.example,,b.example", "empty registry entry"),
            ("bad host!", "invalid host"),
        ] {
            let error = CueRegistry::parse(config).unwrap_err();
            assert!(error.contains(expected), "{config}: {error}");
        }
    }
}
