//! What nginx will really apply: a config parsed into its directives, and the effective
//! settings of the locations that serve the download and the webhook, with the defaults of the
//! nginx line that runs it (1.29.7 turned upstream keep-alive on for explicit upstream blocks,
//! per location, made HTTP/1.1 the default and stopped sending `Connection: close`).

use crate::nginx::{parse_time, NginxLine};
use serde::Serialize;

/// One directive, with its block if it opens one.
#[derive(Debug, Clone, PartialEq)]
pub struct Directive {
    /// Its name (`proxy_pass`, `location`).
    pub name: String,
    /// Its arguments, unquoted.
    pub args: Vec<String>,
    /// The directives inside its block.
    pub block: Option<Vec<Directive>>,
    /// 1-based line.
    pub line: usize,
}

/// Splits a config into tokens (`;`, `{`, `}` and words, quotes removed) with their lines.
fn tokens(text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<(String, usize)>, line| {
        if !word.is_empty() {
            out.push((std::mem::take(word), line));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
                flush(&mut word, &mut out, line);
            }
            '"' | '\'' => {
                let mut quoted = String::new();
                while let Some(q) = chars.next() {
                    match q {
                        '\\' => quoted.extend(chars.next()),
                        q if q == c => break,
                        '\n' => {
                            line += 1;
                            quoted.push('\n');
                        }
                        q => quoted.push(q),
                    }
                }
                // An empty quoted string is a word of its own (`Connection ""`).
                word.push_str(&quoted);
                out.push((std::mem::take(&mut word), line));
            }
            ';' | '{' | '}' => {
                flush(&mut word, &mut out, line);
                out.push((c.to_string(), line));
            }
            c if c.is_whitespace() => {
                flush(&mut word, &mut out, line);
                if c == '\n' {
                    line += 1;
                }
            }
            c => word.push(c),
        }
    }
    flush(&mut word, &mut out, line);
    out
}

fn parse_block(
    toks: &mut std::iter::Peekable<std::vec::IntoIter<(String, usize)>>,
) -> Vec<Directive> {
    let mut out = Vec::new();
    while let Some((name, line)) = toks.next() {
        if name == "}" {
            break;
        }
        let mut args = Vec::new();
        let mut block = None;
        for (t, _) in toks.by_ref() {
            match t.as_str() {
                ";" => break,
                "{" => {
                    block = Some(parse_block(toks));
                    break;
                }
                _ => args.push(t),
            }
        }
        out.push(Directive {
            name,
            args,
            block,
            line,
        });
    }
    out
}

/// Parses a config into its directives (`include`s are not followed).
pub fn parse(text: &str) -> Vec<Directive> {
    parse_block(&mut tokens(text).into_iter().peekable())
}

fn find<'a>(ds: &'a [Directive], name: &str) -> Option<&'a Directive> {
    ds.iter().rev().find(|d| d.name == name)
}

fn block<'a>(ds: &'a [Directive], name: &str) -> Option<&'a [Directive]> {
    ds.iter().find(|d| d.name == name)?.block.as_deref()
}

/// The location block of `server` that serves `path`, as nginx chooses: an exact match, else
/// the longest prefix (final when it is `^~`), else the first matching regex, else the prefix.
pub fn location<'a>(server: &'a [Directive], path: &str) -> Option<&'a Directive> {
    let locations: Vec<&Directive> = server.iter().filter(|d| d.name == "location").collect();
    let exact = locations
        .iter()
        .find(|l| l.args.len() == 2 && l.args[0] == "=" && l.args[1] == path);
    if let Some(l) = exact {
        return Some(l);
    }
    let prefix = |l: &&&Directive| match l.args.as_slice() {
        [p] => path.starts_with(p.as_str()).then_some((p.len(), false)),
        [m, p] if m == "^~" => path.starts_with(p.as_str()).then_some((p.len(), true)),
        _ => None,
    };
    let longest = locations
        .iter()
        .filter_map(|l| prefix(&l).map(|(n, f)| (n, f, *l)))
        .max_by_key(|(n, _, _)| *n);
    if let Some((_, true, l)) = longest {
        return Some(l);
    }
    let regex = locations.iter().find(|l| match l.args.as_slice() {
        [m, re] if m == "~" => regex::Regex::new(re).is_ok_and(|r| r.is_match(path)),
        [m, re] if m == "~*" => {
            regex::Regex::new(&format!("(?i){re}")).is_ok_and(|r| r.is_match(path))
        }
        _ => false,
    });
    regex.copied().or(longest.map(|(_, _, l)| l))
}

/// A location's effective proxy settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocationFacts {
    /// The location as written (`/api/`, `= /healthz`).
    pub location: String,
    /// The upstream block it proxies to, if it names one (`None`: an address, never pooled).
    pub upstream: Option<String>,
    /// `proxy_http_version` in effect.
    pub proxy_http_version: String,
    /// The `Connection` header nginx sends upstream for a plain request (`None`: none).
    pub connection_header: Option<String>,
    /// It sends the WebSocket headers (`Upgrade`, `Connection $connection_upgrade`) on every request.
    pub websocket_headers: bool,
    /// `proxy_read_timeout`, seconds.
    pub read_timeout_secs: f64,
    /// `proxy_buffer_size`, bytes.
    pub buffer_size_bytes: u64,
    /// `proxy_next_upstream` in effect.
    pub next_upstream: Vec<String>,
    /// Its upstream connections are kept for reuse.
    pub pooled: bool,
}

/// What nginx will apply, for the harness's purposes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NginxFacts {
    /// The version that runs it (`nginx/1.30.6`).
    pub version: String,
    /// The upstream block keeps idle connections.
    pub upstream_keepalive: bool,
    /// … because the config says so (`keepalive N`), not by the version's default.
    pub keepalive_explicit: bool,
    /// Idle connections are reused only by the location that made them (`local`).
    pub keepalive_per_location: bool,
    /// The upstream block's `keepalive_timeout`, seconds.
    pub keepalive_timeout_secs: f64,
    /// The location serving `/api/calls/{call_sid}/download`.
    pub download: Option<LocationFacts>,
    /// The location serving `/webhook/recording-status`.
    pub webhook: Option<LocationFacts>,
}

/// `nginx/1.29.7` → `(1, 29, 7)`.
fn version_tuple(version: &str) -> (u32, u32, u32) {
    let v = version.trim_start_matches("nginx/");
    let mut it = v
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok());
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

/// From 1.29.7 on: upstream keep-alive by default (explicit blocks, per location), HTTP/1.1
/// upstream by default, and no `Connection: close` sent by default.
pub fn keepalive_by_default(version: &str) -> bool {
    version_tuple(version) >= (1, 29, 7)
}

/// A directive's value at the innermost of `levels` (outermost first) that sets it.
fn inner<'a>(levels: &[&'a [Directive]], name: &str) -> Option<&'a Directive> {
    levels.iter().rev().find_map(|ds| find(ds, name))
}

/// The `proxy_set_header`s in effect: those of the innermost level that has any (nginx does not
/// merge them across levels).
fn set_headers<'a>(levels: &[&'a [Directive]]) -> Vec<&'a Directive> {
    levels
        .iter()
        .rev()
        .map(|ds| {
            ds.iter()
                .filter(|d| d.name == "proxy_set_header")
                .collect::<Vec<_>>()
        })
        .find(|h| !h.is_empty())
        .unwrap_or_default()
}

/// What a `map` yields for an empty input (a plain request has no `Upgrade`), for `$var`.
fn map_of_empty(http: &[Directive], var: &str) -> Option<String> {
    let map = http
        .iter()
        .find(|d| d.name == "map" && d.args.get(1).map(String::as_str) == Some(var))?;
    let entries = map.block.as_deref()?;
    let entry = |key: &str| {
        entries
            .iter()
            .find(|e| e.name == key)
            .and_then(|e| e.args.first().cloned())
    };
    entry("").or_else(|| entry("default"))
}

/// The `Connection` header nginx sends upstream for a plain request.
fn connection(
    http: &[Directive],
    headers: &[&Directive],
    http11: bool,
    new_defaults: bool,
) -> Option<String> {
    let set = headers.iter().find(|d| {
        d.args
            .first()
            .is_some_and(|h| h.eq_ignore_ascii_case("connection"))
    });
    match set.and_then(|d| d.args.get(1)) {
        Some(v) if v.is_empty() => None,
        Some(v) if v.starts_with('$') => map_of_empty(http, v).filter(|s| !s.is_empty()),
        Some(v) => Some(v.clone()),
        None if !http11 || !new_defaults => Some("close".into()),
        None => None,
    }
}

fn size_bytes(v: &str) -> Option<u64> {
    let v = v.to_ascii_lowercase();
    let (num, mult) = match v.chars().last()? {
        'k' => (&v[..v.len() - 1], 1024),
        'm' => (&v[..v.len() - 1], 1024 * 1024),
        _ => (&v[..], 1),
    };
    num.parse::<u64>().ok().map(|n| n * mult)
}

/// The effective settings of the location serving `path`.
fn location_facts(
    http: &[Directive],
    server: &[Directive],
    path: &str,
    version: &str,
) -> Option<LocationFacts> {
    let loc = location(server, path)?;
    let levels = [http, server, loc.block.as_deref().unwrap_or(&[])];
    let new_defaults = keepalive_by_default(version);
    let pass = inner(&levels, "proxy_pass")?.args.first()?.clone();
    let host = pass
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or("")
        .to_string();
    let upstream = http
        .iter()
        .any(|d| d.name == "upstream" && d.args.first() == Some(&host))
        .then_some(host);
    let version_arg = inner(&levels, "proxy_http_version").and_then(|d| d.args.first().cloned());
    let http_version =
        version_arg.unwrap_or_else(|| if new_defaults { "1.1" } else { "1.0" }.into());
    let headers = set_headers(&levels);
    let connection_header = connection(http, &headers, http_version == "1.1", new_defaults);
    let websocket_headers = headers.iter().any(|d| {
        d.args
            .first()
            .is_some_and(|h| h.eq_ignore_ascii_case("upgrade"))
    });
    let upstream_pools = upstream
        .as_deref()
        .is_some_and(|u| upstream_keepalive(http, u, version).0);
    Some(LocationFacts {
        location: loc.args.join(" "),
        pooled: upstream_pools
            && http_version == "1.1"
            && connection_header.as_deref() != Some("close"),
        upstream,
        proxy_http_version: http_version,
        connection_header,
        websocket_headers,
        read_timeout_secs: inner(&levels, "proxy_read_timeout")
            .and_then(|d| parse_time(d.args.first()?))
            .unwrap_or(60.0),
        buffer_size_bytes: inner(&levels, "proxy_buffer_size")
            .and_then(|d| size_bytes(d.args.first()?))
            .unwrap_or(4096),
        next_upstream: inner(&levels, "proxy_next_upstream")
            .map(|d| d.args.clone())
            .unwrap_or_else(|| vec!["error".into(), "timeout".into()]),
    })
}

/// Whether upstream block `name` keeps idle connections: (pooled, explicit, per location,
/// keepalive_timeout seconds).
fn upstream_keepalive(http: &[Directive], name: &str, version: &str) -> (bool, bool, bool, f64) {
    let block = http
        .iter()
        .find(|d| d.name == "upstream" && d.args.first().map(String::as_str) == Some(name))
        .and_then(|d| d.block.as_deref())
        .unwrap_or(&[]);
    let timeout = find(block, "keepalive_timeout")
        .and_then(|d| parse_time(d.args.first()?))
        .unwrap_or(60.0);
    match find(block, "keepalive") {
        Some(d) => {
            let n: u64 = d.args.first().and_then(|a| a.parse().ok()).unwrap_or(0);
            let local = d.args.iter().any(|a| a == "local");
            (n > 0, true, local, timeout)
        }
        None => {
            let on = keepalive_by_default(version);
            (on, false, on, timeout)
        }
    }
}

/// The effective settings of a config (its text) on nginx `version`.
pub fn facts(config: &str, version: &str) -> NginxFacts {
    let all = parse(config);
    let http = block(&all, "http").unwrap_or(&[]);
    let server = block(http, "server").unwrap_or(&[]);
    let call = mock_twilio::sid("CA", 1);
    let download_path = crate::app::download_path(&call, None);
    let download = location_facts(http, server, &download_path, version);
    let webhook = location_facts(http, server, crate::app::WEBHOOK_PATH, version);
    let upstream = download
        .as_ref()
        .or(webhook.as_ref())
        .and_then(|l| l.upstream.clone());
    let (on, explicit, local, timeout) = upstream
        .as_deref()
        .map(|u| upstream_keepalive(http, u, version))
        .unwrap_or((false, false, false, 60.0));
    NginxFacts {
        version: version.to_string(),
        upstream_keepalive: on,
        keepalive_explicit: explicit,
        keepalive_per_location: local,
        keepalive_timeout_secs: timeout,
        download,
        webhook,
    }
}

/// The line of a version string, for choosing images (`None` for one the harness has none of).
pub fn line_of(version: &str) -> Option<NginxLine> {
    NginxLine::of_version(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docker(name: &str) -> String {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../docker")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn the_fixed_config_pools_both_locations_on_every_version() {
        for v in ["nginx/1.22.1", "nginx/1.30.6"] {
            let f = facts(&docker("nginx.conf"), v);
            assert!(
                f.upstream_keepalive && f.keepalive_explicit && !f.keepalive_per_location,
                "{v}"
            );
            assert_eq!(f.keepalive_timeout_secs, 60.0);
            let d = f.download.unwrap();
            assert!(
                d.pooled && !d.websocket_headers && d.connection_header.is_none(),
                "{d:?}"
            );
            assert_eq!((d.read_timeout_secs, d.location.as_str()), (300.0, "/api/"));
        }
    }

    #[test]
    fn the_legacy_api_closes_while_its_webhook_pools() {
        let f = facts(&docker("nginx.legacy.conf"), "nginx/1.22.1");
        let d = f.download.unwrap();
        assert_eq!(d.connection_header.as_deref(), Some("close"));
        assert!(d.websocket_headers && !d.pooled);
        assert_eq!(d.read_timeout_secs, 60.0);
        assert!(f.webhook.unwrap().pooled);
    }

    #[test]
    fn the_stock_config_pools_only_from_1_29_7_and_per_location() {
        let old = facts(&docker("nginx.stock.conf"), "nginx/1.26.3");
        assert!(!old.upstream_keepalive);
        let w = old.webhook.unwrap();
        assert_eq!(
            (
                w.proxy_http_version.as_str(),
                w.connection_header.as_deref()
            ),
            ("1.0", Some("close"))
        );
        assert!(!w.pooled);
        let new = facts(&docker("nginx.stock.conf"), "nginx/1.30.6");
        assert!(new.upstream_keepalive && !new.keepalive_explicit && new.keepalive_per_location);
        let w = new.webhook.unwrap();
        assert!(w.pooled && w.connection_header.is_none(), "{w:?}");
    }

    #[test]
    fn locations_are_chosen_as_nginx_chooses_them() {
        let conf = "http { server { location / {} location /api/ {} location ^~ /api/calls/ {} location ~ download$ {} location = /x {} } }";
        let all = parse(conf);
        let server = block(block(&all, "http").unwrap(), "server").unwrap();
        assert_eq!(location(server, "/x").unwrap().args, ["=", "/x"]);
        assert_eq!(
            location(server, "/api/calls/CA1/download").unwrap().args,
            ["^~", "/api/calls/"]
        );
        assert_eq!(
            location(server, "/api/other/download").unwrap().args,
            ["~", "download$"]
        );
        assert_eq!(location(server, "/api/other").unwrap().args, ["/api/"]);
    }
}
