//! nginx: find the binary, and render a deployable config (`docker/*.conf`) for one stack.
//!
//! The harness keeps no copy of any nginx config: it rewrites only the directives that must
//! differ per stack (listen, the upstream server, log/pid/temp paths, the static root) and
//! scales timeouts on request, keeping their ratios.

use crate::error::HarnessError;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The install hint printed when nginx is missing.
pub const INSTALL_HINT: &str = "install it with `apt-get install nginx-light` (Debian/Ubuntu), or set HARNESS_NGINX to its path";

/// Finds the nginx binary: `$HARNESS_NGINX`, then `nginx` on PATH, then `/usr/sbin/nginx`.
pub fn find_nginx() -> Result<PathBuf, HarnessError> {
    if let Some(p) = std::env::var_os("HARNESS_NGINX") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(HarnessError::ToolMissing {
                tool: "nginx",
                hint: format!(
                    "HARNESS_NGINX={} is not a file; {INSTALL_HINT}",
                    p.display()
                ),
            })
        };
    }
    crate::locate::which("nginx").ok_or(HarnessError::ToolMissing {
        tool: "nginx",
        hint: INSTALL_HINT.to_string(),
    })
}

/// A line of nginx releases, as one Debian suite ships it: the versions teams really run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum NginxLine {
    /// 1.22 (Debian 12, bookworm).
    #[serde(rename = "1.22")]
    V1_22,
    /// 1.26 (Debian 13, trixie).
    #[serde(rename = "1.26")]
    V1_26,
    /// 1.30 (Debian unstable, sid): upstream keep-alive on by default since 1.29.7.
    #[serde(rename = "1.30")]
    V1_30,
}

impl NginxLine {
    /// Every line, oldest first.
    pub const ALL: [NginxLine; 3] = [NginxLine::V1_22, NginxLine::V1_26, NginxLine::V1_30];

    /// The line snapshots are named after by default (the one Debian 12 hosts run).
    pub const DEFAULT: NginxLine = NginxLine::V1_22;

    /// `1.22`, `1.26`, `1.30`.
    pub fn name(self) -> &'static str {
        match self {
            NginxLine::V1_22 => "1.22",
            NginxLine::V1_26 => "1.26",
            NginxLine::V1_30 => "1.30",
        }
    }

    /// The Debian suite whose nginx-light is of this line.
    pub fn suite(self) -> &'static str {
        match self {
            NginxLine::V1_22 => "bookworm",
            NginxLine::V1_26 => "trixie",
            NginxLine::V1_30 => "sid",
        }
    }

    /// The line of a version (`nginx/1.22.1`, `1.30.6`), if it is one the harness knows.
    pub fn of_version(version: &str) -> Option<NginxLine> {
        let v = version.trim_start_matches("nginx/");
        Self::ALL
            .into_iter()
            .find(|l| v.starts_with(&format!("{}.", l.name())))
    }
}

impl std::fmt::Display for NginxLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for NginxLine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|l| l.name() == s.trim_start_matches("nginx-"))
            .ok_or_else(|| {
                format!("{s:?} is not an nginx line the harness runs (1.22, 1.26, 1.30)")
            })
    }
}

/// nginx's version line, e.g. `nginx/1.22.1`.
pub fn version(nginx: &Path) -> Option<String> {
    let out = Command::new(nginx).arg("-v").output().ok()?;
    let text = String::from_utf8_lossy(&out.stderr);
    text.split("version: ").nth(1).map(|v| v.trim().to_string())
}

/// RECORDINGS_DIR in the backend's image (`docker/Dockerfile.backend`): the folder an
/// `internal` location aliases in a deployed config.
pub const DEPLOYED_RECORDINGS_DIR: &str = "/data/recordings";

/// What differs between one rendered config and another.
#[derive(Debug, Clone)]
pub struct Render {
    /// The address nginx listens on (already bound by the harness).
    pub listen: SocketAddr,
    /// Where the `upstream` block's servers point, in order (one hop fault point per backend
    /// instance): the Nth `server` line becomes the Nth address, its parameters kept; servers
    /// beyond them are dropped.
    pub upstreams: Vec<SocketAddr>,
    /// The stack's recordings folder (the backend's RECORDINGS_DIR): an `alias` to the backend
    /// image's [`DEPLOYED_RECORDINGS_DIR`] is pointed here, so nginx sends what the backend hands
    /// it by `X-Accel-Redirect`.
    pub recordings_dir: PathBuf,
    /// The stack's sandbox: logs, pid and temp files go there.
    pub sandbox: PathBuf,
    /// The static root (`root` directive).
    pub static_root: PathBuf,
    /// Factor for request timeouts (proxy_read/send/connect_timeout).
    pub timeout_scale: f64,
    /// Factor for keep-alive timeouts.
    pub keepalive_scale: f64,
    /// Factor for proxy_next_upstream_timeout (the retry window).
    pub next_upstream_scale: f64,
}

/// The access-log format every rendered config logs in, whatever the config's own: the harness
/// reads it ([`crate::access`]) to find each request by its `X-Request-ID`.
pub const HARNESS_LOG_FORMAT: &str = concat!(
    r#"log_format harness_timing '$remote_addr [$time_local] "$request" status=$status bytes=$body_bytes_sent ' "#,
    r#"'range="$http_range" upstream_status="$upstream_status" ' "#,
    r#"'upstream_response_time="$upstream_response_time" ' "#,
    r#"'upstream_connect_time="$upstream_connect_time" request_time=$request_time ' "#,
    r#"'request_id="$http_x_request_id" msec=$msec';"#
);

/// nginx's built-in defaults for the proxy timeouts, made explicit so they scale too.
const DEFAULT_PROXY_TIMEOUT_SECS: f64 = 60.0;
const DEFAULT_UPSTREAM_KEEPALIVE_SECS: f64 = 60.0;

/// Parses an nginx time (`300s`, `60`, `500ms`, `1m`) into seconds.
pub fn parse_time(v: &str) -> Option<f64> {
    let v = v.trim();
    let (num, unit) = v
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| v.split_at(i))
        .unwrap_or((v, "s"));
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    })
}

fn ms(secs: f64) -> String {
    format!("{}ms", (secs * 1000.0).round().max(1.0) as u64)
}

/// The timeouts a config sets (after rendering), for reports and for sizing backend timeouts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NginxTimeouts {
    /// Largest `proxy_read_timeout` in the file (or nginx's default 60 s), in seconds.
    pub proxy_read: f64,
    /// The upstream block's `keepalive_timeout` (default 60 s), in seconds.
    pub upstream_keepalive: f64,
}

/// Reads the timeouts a deployable config sets for `/api/`, before scaling.
pub fn timeouts(config: &str) -> NginxTimeouts {
    let mut t = NginxTimeouts {
        proxy_read: DEFAULT_PROXY_TIMEOUT_SECS,
        upstream_keepalive: DEFAULT_UPSTREAM_KEEPALIVE_SECS,
    };
    // (block kind, depth it opened at)
    let mut depth = 0usize;
    let mut block: Option<(&str, usize)> = None;
    let mut http_level_read = None;
    let mut api_read = None;
    for line in config.lines() {
        let l = line.split('#').next().unwrap_or("").trim();
        let mut words = l.trim_end_matches(';').split_whitespace();
        let directive = words.next().unwrap_or("");
        let value = words.next();
        if block.is_none() && l.ends_with('{') {
            if directive == "upstream" {
                block = Some(("upstream", depth));
            } else if directive == "location" && l.contains("/api/") {
                block = Some(("api", depth));
            }
        }
        match (directive, value.and_then(parse_time), block.map(|b| b.0)) {
            ("proxy_read_timeout", Some(v), Some("api")) => api_read = Some(v),
            ("proxy_read_timeout", Some(v), None) if depth == 1 => http_level_read = Some(v),
            ("keepalive_timeout", Some(v), Some("upstream")) => t.upstream_keepalive = v,
            _ => {}
        }
        depth = (depth + l.matches('{').count()).saturating_sub(l.matches('}').count());
        if block.is_some_and(|(_, d)| depth <= d) {
            block = None;
        }
    }
    t.proxy_read = api_read
        .or(http_level_read)
        .unwrap_or(DEFAULT_PROXY_TIMEOUT_SECS);
    t
}

/// Where the renderer is in the config.
#[derive(Default)]
struct Walk {
    /// Brace depth.
    depth: usize,
    /// The depth at which the current upstream block's body is.
    upstream_depth: Option<usize>,
    upstream_has_keepalive_timeout: bool,
    saw_listen: bool,
    /// `server` lines seen in upstream blocks.
    upstream_servers: usize,
    /// `server` lines seen in the current upstream block.
    block_servers: usize,
    saw_http: bool,
    /// The config has an `access_log` in its `http` block (else the harness adds one).
    http_access_log: bool,
}

/// One line of a config, split into what the renderer looks at.
struct Line<'a> {
    n: usize,
    text: &'a str,
    /// Without its comment.
    code: &'a str,
    trimmed: &'a str,
    indent: &'a str,
    words: Vec<&'a str>,
}

impl<'a> Line<'a> {
    fn new(n: usize, text: &'a str) -> Self {
        let code = text.split('#').next().unwrap_or("");
        let trimmed = code.trim();
        Line {
            n,
            text,
            code,
            trimmed,
            indent: &text[..text.len() - text.trim_start().len()],
            words: trimmed.trim_end_matches(';').split_whitespace().collect(),
        }
    }

    fn directive(&self) -> &'a str {
        self.words.first().copied().unwrap_or("")
    }
}

/// The line's time value scaled by `scale`, in ms.
fn scaled(source_name: &str, l: &Line, scale: f64) -> Result<String, HarnessError> {
    let v = l
        .words
        .get(1)
        .and_then(|v| parse_time(v))
        .ok_or_else(|| HarnessError::Config {
            file: source_name.to_string(),
            line: l.n + 1,
            message: format!("cannot read the time in `{}`", l.trimmed),
        })?;
    Ok(format!("{}{} {};", l.indent, l.directive(), ms(v * scale)))
}

/// The line as rendered (`None`: dropped).
fn rewrite(
    source_name: &str,
    l: &Line,
    w: &mut Walk,
    r: &Render,
) -> Result<Option<String>, HarnessError> {
    let sb = r.sandbox.display();
    let indent = l.indent;
    Ok(match l.directive() {
        "user" if w.depth == 0 => None,
        // One process: with several workers, which one (and so which cached upstream
        // connection) takes a request is the kernel's choice, and a run could not be replayed.
        "worker_processes" if w.depth == 0 => Some("worker_processes 1;".to_string()),
        "pid" if w.depth == 0 => Some(format!("pid {sb}/nginx.pid;")),
        "error_log" => {
            let level = l.words.get(2).map(|l| format!(" {l}")).unwrap_or_default();
            Some(format!("{indent}error_log {sb}/error.log{level};"))
        }
        "access_log" if l.words.get(1) != Some(&"off") => Some(format!(
            "{indent}access_log {sb}/access.log harness_timing;"
        )),
        "listen" => {
            w.saw_listen = true;
            Some(format!("{indent}listen {};", r.listen))
        }
        // An upstream block's Nth server: the stack's Nth address, its parameters kept (every
        // upstream block names the same instances in the same order).
        "server" if w.upstream_depth.is_some() && !l.trimmed.ends_with('{') => {
            let n = w.block_servers;
            w.block_servers += 1;
            w.upstream_servers += 1;
            r.upstreams.get(n).map(|addr| {
                let params: String = l.words[2..].iter().map(|p| format!(" {p}")).collect();
                format!("{indent}server {addr}{params};")
            })
        }
        "alias"
            if l.words
                .get(1)
                .is_some_and(|p| p.starts_with(DEPLOYED_RECORDINGS_DIR)) =>
        {
            let rest = &l.words[1][DEPLOYED_RECORDINGS_DIR.len()..];
            Some(format!(
                "{indent}alias {}{rest};",
                r.recordings_dir.display()
            ))
        }
        "root" => Some(format!("{indent}root {};", r.static_root.display())),
        "include" if l.words.get(1).is_some_and(|p| !Path::new(p).exists()) => None,
        "proxy_read_timeout" | "proxy_send_timeout" | "proxy_connect_timeout" => {
            Some(scaled(source_name, l, r.timeout_scale)?)
        }
        "proxy_next_upstream_timeout" => Some(scaled(source_name, l, r.next_upstream_scale)?),
        "keepalive_timeout" => {
            if w.upstream_depth.is_some() {
                w.upstream_has_keepalive_timeout = true;
            }
            Some(scaled(source_name, l, r.keepalive_scale)?)
        }
        _ => Some(l.text.to_string()),
    })
}

/// What goes after a line: nginx's defaults made explicit (so they scale), and temp files in
/// the sandbox, at the top of `http`.
fn after(l: &Line, w: &mut Walk, r: &Render, out: &mut String) {
    if l.directive() == "upstream" {
        w.upstream_depth = Some(w.depth + 1);
        w.upstream_has_keepalive_timeout = false;
        w.block_servers = 0;
    }
    if l.directive() == "http" && l.trimmed.ends_with('{') {
        w.saw_http = true;
        writeln!(out, "    {HARNESS_LOG_FORMAT}").unwrap();
        if !w.http_access_log {
            writeln!(
                out,
                "    access_log {}/access.log harness_timing;",
                r.sandbox.display()
            )
            .unwrap();
        }
        let t = ms(DEFAULT_PROXY_TIMEOUT_SECS * r.timeout_scale);
        writeln!(
            out,
            "    proxy_read_timeout {t};\n    proxy_send_timeout {t};\n    proxy_connect_timeout {t};"
        )
        .unwrap();
        for kind in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            writeln!(
                out,
                "    {kind}_temp_path {}/tmp/{kind};",
                r.sandbox.display()
            )
            .unwrap();
        }
    }
}

/// Whether the `http` block itself (not a server or location) has an `access_log`.
fn has_http_access_log(config: &str) -> bool {
    let mut depth = 0usize;
    config.lines().any(|text| {
        let l = Line::new(0, text);
        let here = depth == 1 && l.directive() == "access_log";
        depth = (depth + l.code.matches('{').count()).saturating_sub(l.code.matches('}').count());
        here
    })
}

/// Renders a deployable config for one stack. Fails, naming the file's problem, when a
/// directive the harness must rewrite is missing.
pub fn render(source_name: &str, config: &str, r: &Render) -> Result<String, HarnessError> {
    let mut out = String::new();
    writeln!(out, "# rendered by the harness from {source_name}").unwrap();
    writeln!(out, "daemon off;\nmaster_process on;").unwrap();
    let mut w = Walk {
        http_access_log: has_http_access_log(config),
        ..Walk::default()
    };
    for (n, text) in config.lines().enumerate() {
        let l = Line::new(n, text);
        let rendered = rewrite(source_name, &l, &mut w, r)?;
        // Close of an upstream block: make its keep-alive timeout explicit so it scales.
        if l.trimmed == "}" && w.upstream_depth == Some(w.depth) {
            if !w.upstream_has_keepalive_timeout {
                let t = ms(DEFAULT_UPSTREAM_KEEPALIVE_SECS * r.keepalive_scale);
                writeln!(out, "{}    keepalive_timeout {t};", l.indent).unwrap();
            }
            w.upstream_depth = None;
        }
        if let Some(line) = rendered {
            out.push_str(&line);
            out.push('\n');
        }
        after(&l, &mut w, r, &mut out);
        let (opens, closes) = (l.code.matches('{').count(), l.code.matches('}').count());
        w.depth = (w.depth + opens).saturating_sub(closes);
    }
    for (ok, what) in [
        (w.saw_http, "an `http {` block"),
        (w.saw_listen, "a `listen` directive"),
        (
            w.upstream_servers > 0,
            "an `upstream` block with a `server`",
        ),
    ] {
        if !ok {
            return Err(HarnessError::Config {
                file: source_name.to_string(),
                line: 0,
                message: format!("the harness needs {what} to rewrite"),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Render {
        Render {
            listen: "127.0.0.1:4000".parse().unwrap(),
            upstreams: vec!["127.0.0.1:5000".parse().unwrap()],
            recordings_dir: "/sb/recordings".into(),
            sandbox: "/sb".into(),
            static_root: "/sb/www".into(),
            timeout_scale: 0.01,
            keepalive_scale: 0.5,
            next_upstream_scale: 0.01,
        }
    }

    fn file(name: &str) -> String {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../docker")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn renders_the_fixed_config_rewriting_only_what_differs() {
        let out = render("nginx.conf", &file("nginx.conf"), &params()).unwrap();
        assert!(out.contains("listen 127.0.0.1:4000;"));
        assert!(out.contains("server 127.0.0.1:5000;"));
        assert!(!out.contains("backend:8000"));
        assert!(
            out.contains("proxy_read_timeout 3000ms;"),
            "300 s scaled by 0.01"
        );
        assert!(
            out.contains("keepalive_timeout 30000ms;"),
            "upstream 60 s scaled by 0.5"
        );
        assert!(out.contains("access_log /sb/access.log harness_timing;"));
        assert_eq!(
            out.matches("access_log ").count(),
            1,
            "one access log: {out}"
        );
        assert!(out.contains("error_log /sb/error.log info;"));
        assert!(
            out.contains("proxy_buffering off;"),
            "everything else is kept"
        );
    }

    #[test]
    fn the_retry_window_scales_by_its_own_factor_when_one_is_given() {
        let hardened = file("nginx.hardened.conf");
        let out = render("nginx.hardened.conf", &hardened, &params()).unwrap();
        // Both locations' 10 s, scaled by 0.01 as the read timeout is.
        assert_eq!(out.matches("proxy_next_upstream_timeout 100ms;").count(), 2);
        let own = Render {
            next_upstream_scale: 1.0,
            ..params()
        };
        let out = render("nginx.hardened.conf", &hardened, &own).unwrap();
        assert_eq!(
            out.matches("proxy_next_upstream_timeout 10000ms;").count(),
            2
        );
        assert!(out.contains("proxy_read_timeout 3000ms;"), "still scaled");
    }

    #[test]
    fn every_upstream_block_of_the_hardened_config_names_both_instances() {
        let mut r = params();
        r.upstreams.push("127.0.0.1:5001".parse().unwrap());
        let out = render("nginx.hardened.conf", &file("nginx.hardened.conf"), &r).unwrap();
        let mut blocks: Vec<Vec<&str>> = Vec::new();
        let mut inside = false;
        for line in out.lines().map(str::trim) {
            if line.starts_with("upstream ") && line.ends_with('{') {
                blocks.push(Vec::new());
                inside = true;
            } else if inside && line == "}" {
                inside = false;
            } else if inside && line.starts_with("server ") {
                blocks.last_mut().unwrap().push(line);
            }
        }
        let both = [
            "server 127.0.0.1:5000 max_fails=0;",
            "server 127.0.0.1:5001 max_fails=0;",
        ];
        assert_eq!(
            blocks,
            vec![both.to_vec(), both.to_vec()],
            "the API's pool and the webhook's"
        );
        assert!(out.contains("alias /sb/recordings/;"));
    }

    #[test]
    fn legacy_defaults_are_made_explicit_and_scaled() {
        let out = render("nginx.legacy.conf", &file("nginx.legacy.conf"), &params()).unwrap();
        assert!(
            out.contains("proxy_read_timeout 600ms;"),
            "nginx's 60 s default, scaled"
        );
        assert!(out.contains("proxy_set_header Connection $connection_upgrade;"));
    }

    #[test]
    fn a_config_without_an_upstream_is_refused_by_name() {
        let err = render(
            "x.conf",
            "http {\n  server {\n    listen 80;\n  }\n}\n",
            &params(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("x.conf") && err.to_string().contains("upstream"),
            "{err}"
        );
    }

    #[test]
    fn reads_timeouts() {
        let t = timeouts(&file("nginx.conf"));
        assert_eq!(t.proxy_read, 300.0);
        assert_eq!(t.upstream_keepalive, 60.0);
        assert_eq!(timeouts(&file("nginx.legacy.conf")).proxy_read, 60.0);
        assert_eq!(parse_time("500ms"), Some(0.5));
        assert_eq!(parse_time("2m"), Some(120.0));
    }
}
