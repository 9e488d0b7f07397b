//! Which source locations the operator may reach. A `cueRef` is written by an application
//! team and is hostile input: it must not read the operator's own disk (`file://`, local
//! paths) nor reach its own pod or node (loopback, link-local and the cloud metadata address,
//! unspecified addresses). These checks are pure: they look at the text the way libgit2, the
//! C resolver and URL parsers will, so that `0x7f000001`, `127.1` or `[::ffff:127.0.0.1]` are
//! seen as the loopback addresses they become. Names that only DNS maps to such an address
//! are not caught here (that needs the network's egress policy).
//!
//! Tests and the local demo serve modules from 127.0.0.1 and file paths: they opt in with
//! [`crate::SourceConfig::allow_local_sources`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::FetchError;

/// The Git repository forms the operator fetches, for messages.
pub(crate) const GIT_FORMS: &str = "https://host/org/repo.git, ssh://[user@]host[:port]/org/repo.git, \
     git://host/org/repo.git or [user@]host:org/repo.git";

/// What every host refusal adds: which hosts are reachable, and the only way around it.
const HOST_RULE: &str = "sources must be network hosts, not loopback, link-local (cloud \
     metadata) or unspecified addresses (only an operator run with --allow-local-sources, for \
     tests and local demos, reaches those)";

/// AWS's instance metadata service on IPv6 (its IPv4 one, 169.254.169.254, is link-local).
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
/// The cloud metadata address on IPv4 (named apart in messages, for clarity).
const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// Checks a Git repository URL (without its `#ref`) and returns it as libgit2 should see it:
/// the scheme lower-cased (libgit2 matches schemes case-sensitively, and an unknown one is
/// taken for an SSH host).
///
/// Allowed: `https://`, `ssh://`, `git://` and scp-style `[user@]host:path`, on hosts that
/// are not loopback, link-local or unspecified. `allow_local` also allows those hosts,
/// `http://`, `file://` and local paths. Malformed URLs are [`FetchError::InvalidRef`];
/// refused ones [`FetchError::SourceNotAllowed`]; messages never show credentials.
pub(crate) fn git_url(url: &str, allow_local: bool) -> Result<String, FetchError> {
    let shown = redact(url);
    let invalid = |reason: String| FetchError::InvalidRef {
        reference: shown.clone(),
        reason,
    };
    let refused = |reason: String| FetchError::SourceNotAllowed {
        url: shown.clone(),
        reason,
    };
    if url.is_empty() {
        return Err(invalid(format!("no repository URL; use {GIT_FORMS}")));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "the repository URL contains whitespace or control characters".into(),
        ));
    }
    if let Some((scheme, rest)) = url.split_once("://")
        && is_scheme(scheme)
    {
        let scheme = scheme.to_ascii_lowercase();
        let normalized = format!("{scheme}://{rest}");
        match scheme.as_str() {
            "https" | "ssh" | "git" => {}
            "http" if allow_local => {}
            "file" if allow_local => return Ok(normalized),
            "http" => {
                return Err(refused(format!(
                    "plain http:// is not allowed; use {GIT_FORMS}"
                )));
            }
            "file" => {
                return Err(refused(format!(
                    "file:// would read the operator's own disk; use {GIT_FORMS}"
                )));
            }
            other => {
                return Err(refused(format!(
                    "the scheme {other}:// is not allowed; use {GIT_FORMS}"
                )));
            }
        }
        // The authority ends at the path, and only there: libgit2 reads
        // `https://a.example?@127.0.0.1/x` and `…#@127.0.0.1/x` as 127.0.0.1 with the user
        // `a.example?`. The user part ends at its last `@`.
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.contains(['?', '#']) {
            return Err(invalid(format!(
                "a '?' or '#' comes before the path, where Git would still read the host; use {GIT_FORMS}"
            )));
        }
        let host_port = split_user(authority).map_err(invalid)?;
        let host = host_and_port(host_port).map_err(invalid)?;
        if !allow_local && let Some(why) = refusal(&host) {
            return Err(refused(format!("{why}; {HOST_RULE}")));
        }
        return Ok(normalized);
    }
    if let Some(user_host) = scp_user_host(url) {
        let host_part = split_user(user_host).map_err(invalid)?;
        let host = match host_part
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
        {
            // `[::1]:repo`, or git's `[host:port]:repo`.
            Some(inside) => match inside.parse::<Ipv6Addr>() {
                Ok(ip) => Host::Ip(IpAddr::V6(ip)),
                Err(_) => host_and_port(inside).map_err(invalid)?,
            },
            None => parse_host(host_part).map_err(invalid)?,
        };
        if !allow_local && let Some(why) = refusal(&host) {
            return Err(refused(format!("{why}; {HOST_RULE}")));
        }
        return Ok(url.to_owned());
    }
    // Neither a URL nor scp-style: git (and libgit2) take it for a path on this machine.
    if allow_local {
        Ok(url.to_owned())
    } else {
        Err(refused(format!(
            "a local path would read the operator's own disk; use {GIT_FORMS}"
        )))
    }
}

/// Checks a registry `host[:port]` (an OCI `cueRef.ref`'s, or one dependencies are routed
/// to); `url` names the module in the message.
pub(crate) fn registry_host(host: &str, url: &str, allow_local: bool) -> Result<(), FetchError> {
    if allow_local {
        return Ok(());
    }
    let refused = |reason: String| FetchError::SourceNotAllowed {
        url: redact(url),
        reason,
    };
    let parsed = host_and_port(host).map_err(|e| refused(format!("registry {e}")))?;
    match refusal(&parsed) {
        Some(why) => Err(refused(format!("registry {why}; {HOST_RULE}"))),
        None => Ok(()),
    }
}

/// `url` without what may be a credential: the user part of the authority (`***@`), a query,
/// and an scp-style user with a password.
pub(crate) fn redact(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((head, _)) => (head, "?***"),
        None => (url, ""),
    };
    let head = if let Some((scheme, rest)) = head.split_once("://") {
        let end = rest.find('/').unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        match authority.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}{path}"),
            None => head.to_owned(),
        }
    } else {
        let before_path = head.split('/').next().unwrap_or_default();
        match before_path.rsplit_once('@') {
            Some((user, _)) if user.contains(':') => format!("***{}", &head[user.len()..]),
            _ => head.to_owned(),
        }
    };
    format!("{head}{query}")
}

/// A host as the resolver will take it.
#[derive(Debug, PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    /// Lower case, without a trailing dot.
    Name(String),
}

/// A scheme as libgit2 reads one (`git_net_str_is_url`): any run of letters, digits, `+`,
/// `-` and `.`, even empty or not starting with a letter (RFC 3986 wants a letter first).
/// `1ssh://127.0.0.1/x` must be judged as the URL libgit2 connects to (its SSH transport
/// takes any URL it has no other transport for), not as the scp-style host `1ssh`.
fn is_scheme(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// The `[user@]host` before the first colon that comes before any slash (git's rule for
/// scp-style addresses; `[…]` may hold colons), or `None` for a path.
fn scp_user_host(url: &str) -> Option<&str> {
    let mut bracketed = false;
    for (i, c) in url.char_indices() {
        match c {
            '[' => bracketed = true,
            ']' => bracketed = false,
            '/' if !bracketed => return None,
            ':' if !bracketed => return Some(&url[..i]),
            _ => {}
        }
    }
    None
}

/// What follows the user part (`user[:password]@`), if any. Two `@`s are refused: parsers
/// disagree on which one ends the user part, and so on the host.
fn split_user(authority: &str) -> Result<&str, String> {
    match authority.rsplit_once('@') {
        Some((user, _)) if user.contains('@') => {
            Err("the host part holds more than one @ (percent-encode it in the user name)".into())
        }
        Some((_, host)) => Ok(host),
        None => Ok(authority),
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn host_and_port(text: &str) -> Result<Host, String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("host {text:?} has no closing ]"))?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("host {text:?}: unexpected text after ]"))?,
            ),
        };
        if inside.contains('%') {
            return Err(format!(
                "host {text:?}: IPv6 zone identifiers are not allowed"
            ));
        }
        let ip = inside
            .parse::<Ipv6Addr>()
            .map_err(|_| format!("host {text:?} is not an IPv6 address"))?;
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        let (host, port) = match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        };
        (parse_host(host)?, port)
    };
    if let Some(port) = port
        && !port.is_empty()
        && port.parse::<u16>().is_err()
    {
        return Err(format!("{port:?} is not a port number"));
    }
    Ok(host)
}

/// A host name or IPv4 address without brackets. Only plain ASCII names: the URL parsers'
/// percent-decoding and IDNA mapping (full-width `１２７.０.０.１`) would otherwise turn a
/// harmless-looking text into a loopback address after this check.
fn parse_host(text: &str) -> Result<Host, String> {
    if text.is_empty() {
        return Err("no host".into());
    }
    if !text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(format!(
            "host {text:?} is not a plain host name (write international names in punycode, \
             without percent-escapes)"
        ));
    }
    let name = text.to_ascii_lowercase();
    let name = name.strip_suffix('.').unwrap_or(&name);
    if name.is_empty() {
        return Err(format!("host {text:?} is not a host name"));
    }
    Ok(match inet_aton(name) {
        Some(ip) => Host::Ip(IpAddr::V4(ip)),
        None => Host::Name(name.to_owned()),
    })
}

/// An IPv4 address in any form the C library (`inet_aton`, so `getaddrinfo`) and WHATWG URL
/// parsers accept: 1 to 4 parts, each decimal, octal (`0…`) or hex (`0x…`), the last filling
/// the remaining bytes (`127.1`, `0x7f000001`, `2130706433`, `0177.0.0.1`).
fn inet_aton(text: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in parts {
        let value = if let Some(hex) = part.strip_prefix("0x").or(part.strip_prefix("0X")) {
            if hex.is_empty() {
                0
            } else {
                u32::from_str_radix(hex, 16).ok()?
            }
        } else if let Some(octal) = part.strip_prefix('0').filter(|o| !o.is_empty()) {
            u32::from_str_radix(octal, 8).ok()?
        } else {
            // Digits only: `parse` would take a leading `+`.
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            part.parse().ok()?
        };
        values.push(value);
    }
    let (&last, leading) = values.split_last()?;
    if leading.iter().any(|&v| v > 255) {
        return None;
    }
    // The last part fills 32, 24, 16 or 8 bits.
    let last_bits = 32 - 8 * u32::try_from(leading.len()).ok()?;
    if last_bits < 32 && u64::from(last) >= 1u64 << last_bits {
        return None;
    }
    let high = leading
        .iter()
        .enumerate()
        .fold(0u32, |acc, (i, &v)| acc | (v << (24 - 8 * i)));
    Some(Ipv4Addr::from(high | last))
}

/// Why the operator must not reach `host`, or `None` when it may.
fn refusal(host: &Host) -> Option<String> {
    match host {
        Host::Ip(ip) => ip_refusal(*ip).map(|why| format!("{ip} is {why}")),
        Host::Name(name) => {
            let loopback = matches!(
                name.as_str(),
                "localhost" | "localhost.localdomain" | "ip6-localhost" | "ip6-loopback"
            ) || name.ends_with(".localhost");
            if loopback {
                Some(format!("{name} is the operator's own host (loopback)"))
            } else if name == "metadata.google.internal" {
                Some(format!("{name} is the cloud metadata service"))
            } else {
                None
            }
        }
    }
}

fn ip_refusal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_loopback() {
                Some("a loopback address (the operator's own pod)")
            } else if v4 == METADATA_V4 {
                Some("the cloud metadata address (link-local)")
            } else if v4.is_link_local() {
                Some("a link-local address")
            } else if v4.octets()[0] == 0 {
                // 0.0.0.0/8 "this network": Linux connects 0.0.0.0 to the local host.
                Some("an unspecified address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_loopback() {
                Some("a loopback address (the operator's own pod)")
            } else if v6.is_unspecified() {
                Some("an unspecified address")
            } else if v6.segments()[0] & 0xffc0 == 0xfe80 {
                Some("a link-local address")
            } else if v6 == METADATA_V6 {
                Some("the cloud metadata address")
            } else if let Some(v4) = v6.to_ipv4_mapped() {
                ip_refusal(IpAddr::V4(v4))
            } else if v6.segments()[..6] == [0; 6] {
                // IPv4-compatible `::a.b.c.d` (deprecated): judge the IPv4 address inside.
                ip_refusal(IpAddr::V4(v6.to_ipv4()?))
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(url: &str) -> String {
        git_url(url, false).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    /// The refusal's message, which must name the URL without credentials.
    fn refused(url: &str) -> String {
        match git_url(url, false) {
            Err(e @ FetchError::SourceNotAllowed { .. }) => {
                assert!(!e.is_transient(), "{e}");
                e.to_string()
            }
            other => panic!("{url}: expected SourceNotAllowed, got {other:?}"),
        }
    }

    fn invalid(url: &str) -> String {
        match git_url(url, false) {
            Err(e @ FetchError::InvalidRef { .. }) => e.to_string(),
            other => panic!("{url:?}: expected InvalidRef, got {other:?}"),
        }
    }

    #[test]
    fn network_urls_of_the_allowed_schemes_pass() {
        for url in [
            "https://github.com/org/repo.git",
            "https://user:token@git.example.com:8443/org/repo.git",
            "ssh://git@github.com/org/repo.git",
            "ssh://git@[2001:db8::1]:2222/repo.git",
            "git://git.example.com/repo",
            "git@github.com:org/repo.git",
            "github.com:org/repo.git",
            "git@[2001:db8::1]:org/repo.git",
            "https://10.0.0.12/org/repo.git",
            "https://192.168.1.1/org/repo.git",
            "https://1e100.net/repo",
            "https://127.0.0.1.example.com/repo",
        ] {
            assert_eq!(allowed(url), url);
        }
        assert_eq!(
            allowed("GIT://git.example.com/repo"),
            "git://git.example.com/repo",
            "schemes are case-insensitive; libgit2 gets lower case"
        );
        assert_eq!(allowed("HTTPS://example.com/r"), "https://example.com/r");
    }

    #[test]
    fn other_schemes_and_local_paths_are_refused() {
        let message = refused("http://git.example.com/repo.git");
        assert!(
            message.contains("http://git.example.com/repo.git"),
            "{message}"
        );
        assert!(
            message.contains("https://host/org/repo.git"),
            "names the forms: {message}"
        );
        for url in [
            "file:///etc",
            "FILE:///etc",
            "/etc/passwd",
            "../x",
            "./repo",
            "repo",
            "example.com/repo",
            "/tmp/a:b",
            "ftp://example.com/repo",
            "git+ssh://example.com/repo",
            "ext::sh -c touch% /tmp/pwned",
            // libgit2 reads these as URLs to 127.0.0.1 over SSH, not as the host `1ssh`.
            "1ssh://127.0.0.1/x",
            ".ssh://127.0.0.1:22/x",
            "-x://169.254.169.254/",
            "://localhost/x",
        ] {
            if url.contains(' ') {
                invalid(url);
            } else {
                let message = refused(url);
                assert!(message.contains(GIT_FORMS), "{url}: {message}");
            }
        }
        assert!(refused("file:///etc").contains("own disk"));
        assert!(refused("/etc/passwd").contains("own disk"));
    }

    #[test]
    fn loopback_link_local_and_unspecified_hosts_are_refused() {
        for url in [
            "https://127.0.0.1/x",
            "https://127.1.2.3/x",
            "https://[::1]/x",
            "https://[::1]:8443/x",
            "https://[0:0:0:0:0:0:0:1]/x",
            "https://[::ffff:127.0.0.1]/x",
            "https://[::127.0.0.1]/x",
            "https://169.254.169.254/",
            "https://169.254.1.1/x",
            "https://[fe80::1]/x",
            "https://[febf::1]/x",
            "https://[fd00:ec2::254]/x",
            "https://0.0.0.0/x",
            "https://0/x",
            "https://[::]/x",
            "https://localhost/x",
            "https://LOCALHOST./x",
            "https://api.localhost/x",
            "https://ip6-localhost/x",
            "https://metadata.google.internal/computeMetadata/v1/",
            "ssh://localhost/x",
            "ssh://git@127.0.0.1:2222/x",
            "git://127.0.0.1:9418/x",
            "localhost:repo",
            "git@localhost:repo.git",
            "git@[::1]:repo.git",
            "[127.0.0.1:22]:repo.git",
            // What inet_aton and WHATWG URL parsers turn into 127.0.0.1.
            "https://0x7f000001/",
            "https://2130706433/",
            "https://0177.0.0.1/",
            "https://127.1/",
            "https://0x7f.1/",
            "https://0xA9.0xFE.0xA9.0xFE/",
        ] {
            let message = refused(url);
            assert!(message.contains("--allow-local-sources"), "{message}");
        }
        assert!(refused("https://[::1]/x").contains("::1 is a loopback address"));
        assert!(refused("https://169.254.169.254/").contains("cloud metadata"));
        assert!(refused("https://0x7f000001/").contains("127.0.0.1 is a loopback"));
    }

    #[test]
    fn messages_never_show_credentials() {
        let message = refused("https://user:s3cret@127.0.0.1/x");
        assert!(
            !message.contains("s3cret") && !message.contains("user"),
            "{message}"
        );
        assert!(message.contains("https://***@127.0.0.1/x"), "{message}");
        let message = refused("http://token@example.com/x?private_token=s3cret");
        assert!(
            !message.contains("s3cret") && !message.contains("token@"),
            "{message}"
        );
        let message = invalid("https://a@b@example.com/x");
        assert!(!message.contains("a@b"), "{message}");
        let message = invalid("https://user:s3cret@exa mple.com/x");
        assert!(!message.contains("s3cret"), "{message}");
        assert_eq!(
            redact("git@github.com:org/repo.git"),
            "git@github.com:org/repo.git"
        );
        assert_eq!(redact("user:pw@host:repo"), "***@host:repo");
        assert_eq!(redact("/srv/repo"), "/srv/repo");
    }

    #[test]
    fn malformed_urls_are_invalid_whatever_the_flag() {
        for url in [
            "",
            "https://example.com/x y",
            " https://example.com/x",
            "https://example.com/x\n",
            "https://exa\u{0}mple.com/x",
            "https://example.com\t/x",
            "https:///x",
            "https://:443/x",
            "https://example.com:http/x",
            "https://[::1/x",
            "https://[fe80::1%25eth0]/x",
            "https://%6c%6fcalhost/x",
            "https://１２７.０.０.１/x",
            "https://a@127.0.0.1@example.com/x",
            "git@:repo",
            // libgit2 ends the authority at `/` only: these would connect to 127.0.0.1.
            "https://git.example.com?@127.0.0.1/x",
            "ssh://git.example.com?x@127.0.0.1:22/x",
            "git://git.example.com#@127.0.0.1/x",
        ] {
            invalid(url);
            assert!(
                matches!(git_url(url, true), Err(FetchError::InvalidRef { .. })),
                "{url:?} with local sources allowed"
            );
        }
    }

    #[test]
    fn allowing_local_sources_allows_local_hosts_http_and_paths() {
        for url in [
            "http://127.0.0.1:8080/repo",
            "git://127.0.0.1:9418/repo",
            "https://[::1]/x",
            "ssh://git@localhost:2222/x",
            "file:///srv/repos/platform",
            "/srv/repos/platform",
            "../x",
            "git@localhost:repo.git",
        ] {
            assert_eq!(git_url(url, true).expect(url), url);
        }
        assert_eq!(
            git_url("FILE:///srv/x", true).expect("file"),
            "file:///srv/x"
        );
        assert!(
            matches!(
                git_url("ftp://example.com/x", true),
                Err(FetchError::SourceNotAllowed { .. })
            ),
            "schemes libgit2 does not fetch stay refused"
        );
    }

    #[test]
    fn registry_hosts_are_checked_the_same_way() {
        let url = "oci://127.0.0.1:5000/platform";
        for host in [
            "127.0.0.1:5000",
            "localhost:5000",
            "localhost",
            "[::1]:5000",
            "169.254.169.254",
            "0.0.0.0:5000",
            "0x7f000001:5000",
            "registry.localhost",
        ] {
            match registry_host(host, url, false) {
                Err(e @ FetchError::SourceNotAllowed { .. }) => {
                    assert!(!e.is_transient());
                    assert!(e.to_string().contains(url), "{e}");
                }
                other => panic!("{host}: {other:?}"),
            }
            assert!(registry_host(host, url, true).is_ok(), "{host}");
        }
        for host in [
            "ghcr.io",
            "registry.example.com:5000",
            "10.96.0.10:5000",
            "[2001:db8::1]:5000",
        ] {
            assert!(registry_host(host, url, false).is_ok(), "{host}");
        }
        assert!(registry_host("bad host", url, false).is_err());
    }

    #[test]
    fn inet_aton_reads_every_ipv4_form() {
        let ip = |s: &str| inet_aton(s);
        let loopback = Some(Ipv4Addr::LOCALHOST);
        assert_eq!(ip("127.0.0.1"), loopback);
        assert_eq!(ip("127.1"), loopback);
        assert_eq!(ip("127.0.1"), loopback);
        assert_eq!(ip("0x7f000001"), loopback);
        assert_eq!(ip("0X7F000001"), loopback);
        assert_eq!(ip("2130706433"), loopback);
        assert_eq!(ip("0177.0.0.01"), loopback);
        assert_eq!(ip("0x7f.0.0.0x1"), loopback);
        assert_eq!(ip("0"), Some(Ipv4Addr::UNSPECIFIED));
        assert_eq!(ip("0x"), Some(Ipv4Addr::UNSPECIFIED));
        assert_eq!(ip("10.0.0.12"), Some(Ipv4Addr::new(10, 0, 0, 12)));
        for name in [
            "256.0.0.1",
            "1.2.3.4.5",
            "127..1",
            "08.0.0.1",
            "1e100",
            "4294967296",
            "1.16777216",
            "1.2.65536",
            "example",
            "+1",
            "",
        ] {
            assert_eq!(ip(name), None, "{name}");
        }
    }
}
