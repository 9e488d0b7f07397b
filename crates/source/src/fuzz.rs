//! Fuzzing (proptest) of what a Transform's author writes into `cueRef` and what the module
//! they point at declares: Git URLs (`cueRef.ref` for `git`), OCI references, `cueRef.path`,
//! `cueRef.version`, and the module's `cue.mod/module.cue`. A test module of the crate (the
//! checks are crate-private); `cargo test fuzz` finds it.
//!
//! Every property runs `PEQUOD_FUZZ_CASES` cases (2000 when unset, so `cargo xtask test` stays
//! quick; `cargo xtask fuzz` runs a million). Invariants:
//!
//! - `fuzz_source_git_url`: any text, and URLs built from hostile parts (schemes, user
//!   parts, hosts in every IPv4 form `inet_aton` reads and every IPv6 form, ports, paths,
//!   fragments) then mutated, never panic; what is accepted without `allow_local_sources` is
//!   an `https://`, `ssh://` or `git://` URL or scp-style address (never `file://`, never a
//!   local path) whose host, read the way libgit2 reads it, is not `localhost` and, parsed by
//!   `std::net`, not a loopback, link-local or unspecified address; a host built from such an
//!   address is refused in whatever form it was written; what is accepted is accepted with
//!   local sources allowed too; refusals never show the password.
//! - `fuzz_source_oci_ref`: the same for OCI references and the registry host the fetch
//!   checks, and a parsed digest is always a `sha256:` digest.
//! - `fuzz_source_module_file`: `ModuleFile::parse` never panics or overflows its stack on any
//!   text, CUE-shaped text or nesting thousands of levels deep, and the dependencies it
//!   returns all name a major version that their canonical version has.
//! - `fuzz_source_paths_and_versions`: `cueRef.path` cleaning never yields a path that leaves
//!   the module (absolute, `..`, backslash, NUL); version constraints, tag picking, ref
//!   choice and the dependency registry setting never panic, and a picked tag matches.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};

use crate::FetchError;
use crate::allowed::{git_url, redact, registry_host};
use crate::modfile::ModuleFile;

/// Cases per property: `PEQUOD_FUZZ_CASES` (underscores allowed), else 2000.
fn cases() -> u32 {
    std::env::var("PEQUOD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(2000)
}

/// Runs `test` on `cases()` values of `strategy` and prints how many ran and how long it took
/// (`cargo xtask fuzz` shows these lines). A panic inside `test` is a failure, shrunk.
fn fuzz<S: Strategy>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let config = ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let ran = Cell::new(0_u64);
    let started = Instant::now();
    let result = runner.run(&strategy, |value| {
        ran.set(ran.get() + 1);
        test(value)
    });
    eprintln!(
        "fuzz {name}: {} cases in {:.1?}",
        ran.get(),
        started.elapsed()
    );
    if let Err(error) = result {
        panic!("{name}: {error}");
    }
}

// ---------------------------------------------------------------------------------------------
// Hosts whose address is known, written in every form a resolver or URL parser reads

/// An IPv4 address, mostly from the ranges that matter.
fn ipv4() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        3 => any::<[u8; 3]>().prop_map(|[b, c, d]| Ipv4Addr::new(127, b, c, d)),
        2 => any::<[u8; 2]>().prop_map(|[c, d]| Ipv4Addr::new(169, 254, c, d)),
        1 => any::<[u8; 3]>().prop_map(|[b, c, d]| Ipv4Addr::new(0, b, c, d)),
        1 => Just(Ipv4Addr::UNSPECIFIED),
        1 => Just(Ipv4Addr::new(169, 254, 169, 254)),
        2 => any::<u32>().prop_map(Ipv4Addr::from),
        1 => Just(Ipv4Addr::new(10, 0, 0, 12)),
    ]
}

/// An IPv6 address, mostly from the ranges that matter.
fn ipv6() -> impl Strategy<Value = Ipv6Addr> {
    prop_oneof![
        2 => Just(Ipv6Addr::LOCALHOST),
        1 => Just(Ipv6Addr::UNSPECIFIED),
        2 => (0_u16..0x40, any::<[u16; 4]>())
            .prop_map(|(low, [a, b, c, d])| Ipv6Addr::new(0xfe80 | low, 0, 0, 0, a, b, c, d)),
        2 => ipv4().prop_map(|v4| v4.to_ipv6_mapped()),
        1 => ipv4().prop_map(|v4| v4.to_ipv6_compatible()),
        1 => Just(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
        2 => any::<u128>().prop_map(Ipv6Addr::from),
    ]
}

/// `ip` as `inet_aton` and WHATWG URL parsers read it, in form `form`.
fn ipv4_text(ip: Ipv4Addr, form: u8) -> String {
    let [o1, o2, o3, o4] = ip.octets();
    let whole = u32::from(ip);
    match form % 10 {
        0 => ip.to_string(),
        1 => whole.to_string(),
        2 => format!("0x{whole:x}"),
        3 => format!("0X{whole:08X}"),
        4 => format!("0{o1:o}.0{o2:o}.0{o3:o}.0{o4:o}"),
        5 => format!("{o1}.{}", whole & 0x00ff_ffff),
        6 => format!("{o1}.{o2}.{}", whole & 0xffff),
        7 => format!("0x{o1:x}.0x{o2:x}.0x{o3:x}.0x{o4:x}"),
        8 => format!("{ip}."),
        _ => format!("{o1}.0x{o2:X}.0{o3:o}.{o4}"),
    }
}

/// `ip` in form `form`, without brackets.
fn ipv6_text(ip: Ipv6Addr, form: u8) -> String {
    let s = ip.segments();
    match form % 6 {
        0 => ip.to_string(),
        1 => s
            .iter()
            .map(|x| format!("{x:x}"))
            .collect::<Vec<_>>()
            .join(":"),
        2 => s
            .iter()
            .map(|x| format!("{x:04X}"))
            .collect::<Vec<_>>()
            .join(":"),
        3 => match ip.to_ipv4() {
            // The dotted tail (`::ffff:127.0.0.1`, `::127.0.0.1`).
            Some(v4) if s[5] == 0xffff => format!("::ffff:{v4}"),
            Some(v4) => format!("::{v4}"),
            None => ip.to_string(),
        },
        4 => ip.to_string().to_uppercase(),
        _ => format!("{}:{}::{}", s[0], s[1], s[7]),
    }
}

/// A host part of a URL and, when it names an address in a form with one reading, the address.
#[derive(Clone, Debug)]
struct HostPart {
    text: String,
    address: Option<IpAddr>,
}

fn host_part() -> impl Strategy<Value = HostPart> {
    prop_oneof![
        4 => (ipv4(), any::<u8>()).prop_map(|(ip, form)| HostPart {
            text: ipv4_text(ip, form),
            address: Some(IpAddr::V4(ip)),
        }),
        3 => (ipv6(), any::<u8>()).prop_map(|(ip, form)| {
            // Form 5 drops segments: not the same address any more.
            let text = ipv6_text(ip, form);
            HostPart {
                address: text.parse::<Ipv6Addr>().ok().filter(|p| *p == ip).map(IpAddr::V6),
                text: format!("[{text}]"),
            }
        }),
        1 => (ipv6(), prop::sample::select(vec!["%25eth0", "%eth0", "%"])).prop_map(|(ip, zone)| HostPart {
            text: format!("[{ip}{zone}]"),
            address: Some(IpAddr::V6(ip)),
        }),
        3 => prop::sample::select(vec![
            "localhost",
            "LOCALHOST",
            "localhost.",
            "api.localhost",
            "ip6-localhost",
            "localhost.localdomain",
            "metadata.google.internal",
            "example.com",
            "git.example.com",
            "127.0.0.1.example.com",
            "1e100.net",
            "%6c%6fcalhost",
            "\u{ff11}\u{ff12}\u{ff17}.\u{ff10}.\u{ff10}.\u{ff11}",
            "xn--nxasmq6b",
            "",
            "[",
            "]",
            "[::1",
            "::1",
        ])
        .prop_map(|text| HostPart {
            text: text.to_owned(),
            address: None,
        }),
        1 => "[a-z0-9.\\-_:\\[\\]%@]{0,12}".prop_map(|text| HostPart { text, address: None }),
    ]
}

/// A password that marks itself, to find in messages.
const PASSWORD: &str = "pw\u{2603}";

/// The parts of a Git URL: scheme (or scp-style), user, host, port, path.
#[derive(Clone, Debug)]
struct UrlParts {
    scheme: Option<&'static str>,
    user: &'static str,
    host: HostPart,
    port: &'static str,
    path: &'static str,
}

impl UrlParts {
    fn render(&self) -> String {
        match self.scheme {
            Some(scheme) => format!(
                "{scheme}://{}{}{}{}",
                self.user, self.host.text, self.port, self.path
            ),
            // scp-style: `[user@]host:path`, the port in git's `[host:port]` form.
            None if !self.port.is_empty() && !self.host.text.starts_with('[') => format!(
                "{}[{}{}]:{}",
                self.user,
                self.host.text,
                self.port,
                self.path.trim_start_matches('/')
            ),
            None => format!(
                "{}{}:{}",
                self.user,
                self.host.text,
                self.path.trim_start_matches('/')
            ),
        }
    }
}

fn url_parts() -> impl Strategy<Value = UrlParts> {
    (
        prop::option::weighted(
            0.75,
            prop::sample::select(vec![
                "https", "HTTPS", "Https", "ssh", "SSH", "git", "http", "file", "FILE", "ftp",
                "git+ssh", "ssh+git", "ext", "",
            ]),
        ),
        prop::sample::select(vec![
            "",
            "",
            "git@",
            "user:pw\u{2603}@",
            "a@b@",
            "@",
            "user:pw\u{2603}@evil.com@",
            "x:pw\u{2603}@127.0.0.1@",
            "git.example.com?@",
            "git.example.com#@",
            "git.example.com/@",
            "a%40b@",
        ]),
        host_part(),
        prop::sample::select(vec![
            "", "", ":22", ":443", ":", ":99999", ":x", ":0", ":-1",
        ]),
        prop::sample::select(vec![
            "/org/repo.git",
            "",
            "/",
            "?private_token=pw\u{2603}",
            "#main",
            "/a:b",
            "//x",
            "\\..\\x",
            "/~user/repo",
        ]),
    )
        .prop_map(|(scheme, user, host, port, path)| UrlParts {
            scheme,
            user,
            host,
            port,
            path,
        })
}

/// One edit of a URL's text (after which its host is no longer known).
#[derive(Clone, Debug)]
enum Edit {
    Insert(usize, &'static str),
    Remove(usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (
            any::<usize>(),
            prop::sample::select(vec![
                "@", ":", "/", "[", "]", "%", "#", "?", "\\", " ", "\t", "\n", "\u{0}", ".", "0",
                "x", "\u{ff0e}", "//", "://", "file:", "~",
            ])
        )
            .prop_map(|(at, s)| Edit::Insert(at, s)),
        any::<usize>().prop_map(Edit::Remove),
    ];
    prop_oneof![3 => Just(Vec::new()), 1 => prop::collection::vec(edit, 1..3)]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for edit in edits {
        match edit {
            Edit::Insert(at, s) => {
                let at = at % (chars.len() + 1);
                chars.splice(at..at, s.chars());
            }
            Edit::Remove(at) if !chars.is_empty() => {
                chars.remove(at % chars.len());
            }
            Edit::Remove(_) => {}
        }
    }
    chars.into_iter().collect()
}

// ---------------------------------------------------------------------------------------------
// Oracles

/// Loopback, link-local or unspecified, as `std::net` classifies the address (an IPv4-mapped
/// IPv6 address as the IPv4 address it carries).
fn local_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_unicast_link_local()
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| local_address(IpAddr::V4(v4)))
        }
    }
}

/// Whether a host as a client would read it is the operator's own: a local address (read by
/// `std::net`; brackets and an IPv6 zone taken off) or `localhost`.
fn local_host(host: &str) -> bool {
    // One trailing dot is the DNS root (`localhost.`); `127.0.0.1..` resolves to nothing.
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.split(']').next())
        .unwrap_or(&host);
    let bare = bare.split('%').next().unwrap_or(bare);
    bare == "localhost"
        || bare.ends_with(".localhost")
        || bare.parse::<IpAddr>().is_ok_and(local_address)
}

/// The host libgit2 (1.9, vendored by git2) connects to for `url`, or `None` where it refuses
/// the text: a port of `git_net_str_is_url`, `git_net_url_parse` / `url_parse_authority` and
/// `git_net_url_parse_scp`, the host part only (percent-decoded, as libgit2 does).
fn git_host(url: &str) -> Option<String> {
    let host = match url_scheme(url) {
        Some(scheme) => {
            // The authority runs from `://` to the first `/`, and nothing else ends it.
            let rest = &url[scheme.len() + 3..];
            let authority = rest.split('/').next().unwrap_or_default();
            let ssh = !scheme.is_empty()
                && ["ssh", "ssh+git", "git+ssh"].iter().any(|s| {
                    s.get(..scheme.len())
                        .is_some_and(|p| p.eq_ignore_ascii_case(scheme))
                });
            authority_host(authority, ssh)?
        }
        None => scp_host(url)?,
    };
    percent_decoded(&host)
}

fn percent_decoded(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `url_parse_authority`: read backwards; a port after a `:` that only digits follow, the host
/// up to the last `@` (more `@`s refused but over SSH), `[…]` for IPv6.
fn authority_host(authority: &str, ssh: bool) -> Option<String> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        HostPort,
        Host,
        Ipv6,
        HostEnd,
        UserPass,
    }
    let b = authority.as_bytes();
    let end = b.len();
    let mut state = State::HostPort;
    let mut host_end: Option<usize> = None;
    let mut host: Option<(usize, usize)> = None;
    let mut i = end;
    while i > 0 {
        i -= 1;
        let c = b[i];
        if state == State::HostPort {
            if c == b':' {
                host_end = Some(i);
                state = State::Host;
                continue;
            }
            if !c.is_ascii_digit() {
                host_end = Some(end);
                state = State::Host;
            }
        }
        match state {
            State::HostPort | State::Host => {
                if c == b']' && host_end == Some(i + 1) {
                    host_end = Some(i);
                    state = State::Ipv6;
                } else if c == b'@' {
                    host = Some((i + 1, host_end.unwrap_or(end)));
                    state = State::UserPass;
                } else if matches!(c, b'[' | b']' | b':') {
                    return None;
                }
            }
            State::Ipv6 => {
                if c == b'[' {
                    host = Some((i + 1, host_end?));
                    state = State::HostEnd;
                } else if !(c.is_ascii_hexdigit() || c == b':') {
                    return None;
                }
            }
            State::HostEnd => {
                if c != b'@' {
                    return None;
                }
                state = State::UserPass;
            }
            State::UserPass => {
                if c == b'@' && !ssh {
                    return None;
                }
                if c == b':' {
                    break;
                }
            }
        }
    }
    let (start, stop) = match state {
        State::HostPort => (0, end),
        State::Host => (0, host_end?),
        State::Ipv6 => return None,
        State::HostEnd | State::UserPass => host?,
    };
    authority.get(start..stop).map(str::to_owned)
}

/// The scheme when libgit2 takes the text for a URL (`git_net_str_is_url`): `://` after a
/// run, possibly empty, of letters, digits, `+`, `-` and `.`.
fn url_scheme(url: &str) -> Option<&str> {
    let end = url
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
        .unwrap_or(url.len());
    url[end..].starts_with("://").then(|| &url[..end])
}

/// `git_net_url_parse_scp`: `[user@]host:path`, `[user@][host:port]:path` or
/// `[user@][v6]:path`; the user part only when an `@` comes before the first `:`.
// A port of a C state machine, kept in one piece to compare with the original.
#[allow(clippy::too_many_lines)]
fn scp_host(url: &str) -> Option<String> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Start,
        User,
        HostStart,
        Host,
        HostEnd,
        Ipv6,
        Ipv6End,
        PortStart,
        Port,
        PortEnd,
        PathStart,
    }
    let b = url.as_bytes();
    let is_ipv6 = |from: usize| {
        let mut colons = 0;
        for &c in &b[from + 1..] {
            if c == b':' {
                colons += 1;
            }
            if c == b']' {
                return colons > 1;
            }
            if c != b':' && !c.is_ascii_hexdigit() {
                return false;
            }
        }
        false
    };
    let has_at = |from: usize| {
        b[from..]
            .iter()
            .find(|&&c| c == b'@' || c == b':')
            .is_some_and(|&c| c == b'@')
    };
    let mut state = State::Start;
    let mut bracket = 0_u32;
    let (mut host, mut host_len) = (0, 0);
    let mut path = false;
    for (i, &c) in b.iter().enumerate() {
        if path {
            break;
        }
        match state {
            State::Start => match c {
                b'@' | b':' => return None,
                b'[' if is_ipv6(i) => {
                    state = State::Ipv6;
                    host = i;
                }
                b'[' => {
                    if bracket > 1 {
                        return None;
                    }
                    bracket += 1;
                }
                _ if has_at(i) => state = State::User,
                _ => {
                    state = State::Host;
                    host = i;
                }
            },
            State::User => {
                if c == b'@' {
                    state = State::HostStart;
                }
            }
            State::HostStart => {
                state = if c == b'[' { State::Ipv6 } else { State::Host };
                host = i;
            }
            State::Host => {
                if c == b':' {
                    host_len = i - host;
                    state = if bracket > 0 {
                        State::PortStart
                    } else {
                        State::PathStart
                    };
                } else if c == b']' {
                    if bracket == 0 {
                        return None;
                    }
                    bracket -= 1;
                    host_len = i - host;
                    state = State::HostEnd;
                }
            }
            State::HostEnd | State::PortEnd => {
                if c != b':' {
                    return None;
                }
                state = State::PathStart;
            }
            State::Ipv6 => {
                if c == b']' {
                    state = State::Ipv6End;
                }
            }
            State::Ipv6End => {
                if c != b':' {
                    return None;
                }
                host_len = i - host;
                state = if bracket > 0 {
                    State::PortStart
                } else {
                    State::PathStart
                };
            }
            State::PortStart => state = State::Port,
            State::Port => {
                if c == b']' {
                    if bracket == 0 {
                        return None;
                    }
                    bracket -= 1;
                    state = State::PortEnd;
                }
            }
            State::PathStart => path = true,
        }
    }
    if !path || host_len == 0 {
        return None;
    }
    url.get(host..host + host_len).map(str::to_owned)
}

/// A host as written, compared the way resolvers compare names.
fn same_host(a: &str, b: &str) -> bool {
    let norm = |h: &str| h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase();
    norm(a) == norm(b)
}

/// What an accepted Git URL (without local sources) must be.
fn check_accepted_git(url: &str, normalized: &str) -> Result<(), TestCaseError> {
    let lower = normalized.to_ascii_lowercase();
    // libgit2 reads its disk for `file://` and for a path without `:` (scp-style `file:x`
    // is the SSH host `file`).
    prop_assert!(
        !lower.starts_with("file://"),
        "{} accepted as {}",
        url,
        normalized
    );
    prop_assert!(normalized.contains(':'), "{} accepted as a path", url);
    // A URL has one of the three schemes; anything else with a `:` goes to libgit2's SSH
    // transport as scp-style (libgit2 picks its local transport only for `file://` or a
    // text without `:`).
    if let Some(scheme) = url_scheme(normalized) {
        prop_assert!(
            matches!(scheme, "https" | "ssh" | "git"),
            "scheme of {} accepted",
            normalized
        );
    }
    // `None`: libgit2 refuses the text, and connects nowhere.
    if let Some(host) = git_host(normalized) {
        prop_assert!(
            !local_host(&host),
            "{} accepted: host {} is local",
            url,
            host
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Properties

#[test]
fn fuzz_source_git_url() {
    let strategy = prop_oneof![
        4 => (url_parts(), edits(), prop::option::of("#[a-z0-9/.]{0,8}"))
            .prop_map(|(parts, edits, fragment)| (Some(parts), edits, fragment.unwrap_or_default())),
        1 => "\\PC{0,40}".prop_map(|text| (None, Vec::new(), text)),
        1 => "[a-zA-Z0-9:/@\\[\\].%#?~\\\\ -]{0,30}".prop_map(|text| (None, Vec::new(), text)),
    ];
    fuzz("source/git_url", strategy, |(parts, edits, tail)| {
        let url = match &parts {
            Some(parts) => apply(&parts.render(), &edits) + &tail,
            None => tail.clone(),
        };
        let _ = redact(&url);
        let strict = crate::git::Target::parse(&url, false);
        let local = crate::git::Target::parse(&url, true);
        match &strict {
            Ok(target) => {
                check_accepted_git(&url, &target.url)?;
                prop_assert!(!target.url.contains('#'));
                let allowed = local.as_ref().map(|t| &t.url);
                prop_assert_eq!(
                    allowed.ok(),
                    Some(&target.url),
                    "refused with local sources allowed"
                );
                // The address the host was built from, in whatever form it was written.
                if let Some(parts) = parts.as_ref().filter(|_| edits.is_empty())
                    && let Some(address) = parts.host.address
                    && git_host(&target.url).is_some_and(|h| same_host(&h, &parts.host.text))
                {
                    prop_assert!(
                        !local_address(address),
                        "{} accepted: {} is {}",
                        url,
                        parts.host.text,
                        address
                    );
                }
            }
            Err(error) => {
                prop_assert!(
                    matches!(
                        error,
                        FetchError::InvalidRef { .. } | FetchError::SourceNotAllowed { .. }
                    ),
                    "{:?}",
                    error
                );
                if edits.is_empty() {
                    prop_assert!(!error.to_string().contains(PASSWORD), "{}", error);
                }
            }
        }
        // Credentials never show in a refusal of a URL as built (after random edits, what
        // was the password may no longer be one: `https//user:pw@…` is a local path).
        if let Err(error) = &local
            && edits.is_empty()
        {
            prop_assert!(!error.to_string().contains(PASSWORD), "{}", error);
        }
        // The check alone (before the `#ref` is split off) holds too.
        if let Ok(normalized) = git_url(&url, false) {
            check_accepted_git(&url, &normalized)?;
        }
        // The check alone agrees with the target's.
        let (bare, _) = url.split_once('#').unwrap_or((&url, ""));
        prop_assert_eq!(git_url(bare, false).ok(), strict.ok().map(|t| t.url));
        Ok(())
    });
}

#[test]
fn fuzz_source_oci_ref() {
    let digest = "[0-9a-f]{64}";
    let structured = (
        prop::option::weighted(0.3, Just("oci://")),
        host_part(),
        prop::sample::select(vec!["", "", ":5000", ":", ":99999", ":x"]),
        prop::sample::select(vec![
            "platform/webservice",
            "a",
            "A/b",
            "a//b",
            "",
            "a/b/c/d",
            "_a",
        ]),
        prop_oneof![
            Just(String::new()),
            "[a-zA-Z0-9_.\\-]{0,10}".prop_map(|t| format!(":{t}")),
            digest.prop_map(|d| format!("@sha256:{d}")),
            "[0-9a-f]{0,70}".prop_map(|d| format!("@sha512:{d}")),
            (Just(":v1"), digest).prop_map(|(t, d)| format!("{t}@sha256:{d}")),
        ],
        edits(),
    )
        .prop_map(|(prefix, host, port, repository, suffix, edits)| {
            let text = format!(
                "{}{}{port}/{repository}{suffix}",
                prefix.unwrap_or_default(),
                host.text
            );
            (apply(&text, &edits), edits.is_empty().then_some(host))
        });
    let strategy = prop_oneof![
        4 => structured,
        1 => "\\PC{0,40}".prop_map(|t| (t, None)),
        1 => "[a-z0-9:/@\\[\\]._-]{0,30}".prop_map(|t| (t, None)),
    ];
    fuzz("source/oci_ref", strategy, |(reference, host)| {
        let Ok(target) = crate::oci::Target::parse(&reference) else {
            return Ok(());
        };
        let url = target.url();
        prop_assert!(url.starts_with("oci://"));
        if let Some(digest) = &target.digest {
            prop_assert!(
                digest.len() == 71
                    && digest.starts_with("sha256:")
                    && digest[7..].bytes().all(|b| b.is_ascii_hexdigit()),
                "{}",
                digest
            );
        }
        // The fetch checks the registry it will connect to.
        let strict = registry_host(&target.registry, &url, false);
        prop_assert!(registry_host(&target.registry, &url, true).is_ok());
        if strict.is_ok() {
            let registry = &target.registry;
            let bare = if registry.starts_with('[') {
                registry.split(']').next().unwrap_or_default().to_owned() + "]"
            } else {
                registry.split(':').next().unwrap_or_default().to_owned()
            };
            prop_assert!(
                !local_host(&bare),
                "{} accepted: registry {}",
                reference,
                registry
            );
            if let Some(host) = host
                && let Some(address) = host.address
                && (same_host(registry, &host.text)
                    || registry
                        .rsplit_once(':')
                        .is_some_and(|(h, _)| same_host(h, &host.text)))
            {
                prop_assert!(
                    !local_address(address),
                    "{} accepted: {} is {}",
                    reference,
                    host.text,
                    address
                );
            }
        }
        Ok(())
    });
}

/// CUE-ish text for a module file: fields, labels, strings, lists, nesting, comments.
fn module_text() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "module: ",
        "\"example.com/app@v0\"",
        "deps: ",
        "\"example.com/policy@v0\": ",
        "v: ",
        "\"v0.1.0\"",
        "\"v1.2.3-rc.1+b\"",
        "language: version: \"v0.9.0\"",
        "{",
        "}",
        "[",
        "]",
        ",",
        "\n",
        ":",
        "?",
        "!",
        "// c\n",
        "\"\"\"\n  a\n  \"\"\"",
        "\"\\u00e9\"",
        "\"\\U0001F600\"",
        "\"\\ud800\"",
        "\"\\",
        "\"",
        "1_000",
        "-1.5e3",
        "0x1f",
        "true",
        "null",
        "a",
        "#D",
        "_x",
        "$y",
        "\u{e9}t\u{e9}",
        " ",
        "\t",
        "\r",
    ]);
    prop_oneof![
        4 => prop::collection::vec(token, 0..24).prop_map(|t| t.concat()),
        1 => "\\PC{0,40}",
        1 => (
            1_usize..6000,
            prop::sample::select(vec![("[", "]"), ("{a: ", "}"), ("a: ", ""), ("[{a: ", "}]"), ("\"a\": ", "")]),
        )
            .prop_map(|(levels, (open, close))| {
                format!("deps: {}1{}\n", open.repeat(levels), close.repeat(levels))
            }),
    ]
}

#[test]
fn fuzz_source_module_file() {
    fuzz("source/module_file", module_text(), |text| {
        if let Ok(file) = ModuleFile::parse(&text) {
            for (path, version) in &file.deps {
                let (base, major) = path.rsplit_once('@').unwrap_or_default();
                prop_assert!(!base.is_empty(), "{:?}", path);
                let parsed = version
                    .strip_prefix('v')
                    .and_then(|v| semver::Version::parse(v).ok());
                prop_assert!(parsed.is_some(), "{:?}", version);
                prop_assert_eq!(major, format!("v{}", parsed.map_or(0, |v| v.major)));
            }
        }
        Ok(())
    });
}

#[test]
fn fuzz_source_paths_and_versions() {
    let version = prop_oneof![
        prop::sample::select(vec![
            "v1.2.3",
            "1.2.3",
            "^1.2",
            ">=1.0, <2",
            "~1",
            "*",
            "v1",
            "main",
            "",
            " ",
            "=1.0.0",
            "1.2.3-rc.1",
            ">=1.0.0-rc.0",
            "v999999999999999999999.0.0",
            "^0.0",
            "<0.0.0",
        ])
        .prop_map(str::to_owned),
        "[v0-9.^~<>=*, a-z+-]{0,12}",
    ];
    let tag = prop_oneof![
        prop::sample::select(vec![
            "v1.2.3",
            "1.2.4",
            "v2.0.0-rc.1",
            "main",
            "v1",
            "1.2.3+b",
            "latest"
        ])
        .prop_map(str::to_owned),
        "[v0-9.a-z+-]{0,10}",
    ];
    let path = prop_oneof![
        prop::sample::select(vec![
            ".", "./", "", "/", "..", "../x", "a/../..", "a/./b", "a//b", "/etc", "a\\..\\b",
            "a\u{0}b", "./../x", ". /..",
        ])
        .prop_map(str::to_owned),
        "[a-z./\\\\]{0,12}",
        "\\PC{0,12}",
    ];
    let strategy = (
        path,
        version.clone(),
        prop::collection::vec(tag, 0..6),
        prop::option::of(version),
        "[a-z0-9.:/=,+@ \\[\\]-]{0,30}",
        "[a-z0-9./@-]{0,20}",
    );
    fuzz(
        "source/paths_and_versions",
        strategy,
        |(path, version, tags, want, registry, module)| {
            if let Ok(Some(clean)) = crate::archive::clean_path(&path) {
                prop_assert!(!clean.starts_with('/') && !clean.contains(['\\', '\0']));
                prop_assert!(
                    clean.split('/').all(|s| !matches!(s, "" | "." | "..")),
                    "{:?} cleaned to {:?}",
                    path,
                    clean
                );
            }
            let _ = crate::package_dir(Some(&path));
            if let crate::oci::Wanted::Constraint(req) = crate::oci::wanted(&version)
                && let Some((picked, parsed)) = crate::oci::pick(&tags, &req)
            {
                prop_assert!(req.matches(&parsed));
                prop_assert!(tags.contains(&picked));
                let _ = crate::oci::no_version_matches("oci://r/m", &req, &tags);
            }
            let refs: BTreeMap<String, git2::Oid> = tags
                .iter()
                .enumerate()
                .flat_map(|(i, t)| {
                    let oid = git2::Oid::from_bytes(&[u8::try_from(i).unwrap_or(0); 20])
                        .unwrap_or(git2::Oid::ZERO_SHA1);
                    [
                        (format!("refs/tags/{t}"), oid),
                        (format!("refs/heads/{t}"), oid),
                        ("HEAD".to_owned(), oid),
                    ]
                })
                .collect();
            let _ = crate::git::choose(&refs, want.as_deref(), Some(&version), "https://x/r");
            let _ = crate::git::choose(&refs, want.as_deref(), None, "https://x/r");
            if let Ok(config) = crate::cue_registry::CueRegistry::parse(&registry)
                && let Some(location) = config.resolve(&module, "v0.1.0")
            {
                let base = module.split_once('@').map_or(module.as_str(), |(b, _)| b);
                prop_assert!(location.repository.ends_with(base), "{:?}", location);
            }
            Ok(())
        },
    );
}
