//! The documentation keeps its promises: the README stays short, the bring-your-own-backend
//! guide lists every backend log line the harness reads, every local link resolves, and
//! nothing points outside the repository.

use crate::support::checkout as workspace_dir;
use harness::BackendEvent;
use std::path::{Path, PathBuf};

fn read(rel: &str) -> String {
    std::fs::read_to_string(workspace_dir().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every Markdown file we ship, and every source file.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if p.is_dir() {
            if !matches!(name.as_str(), "target" | ".git" | "corpus" | "artifacts") {
                files(&p, out);
            }
        } else if [".md", ".rs", ".toml", ".html", ".conf", ".yaml", ".yml"]
            .iter()
            .any(|x| name.ends_with(x))
            || name == "run"
        {
            out.push(p);
        }
    }
}

#[test]
fn the_readme_stays_short() {
    let n = read("README.md").chars().count();
    assert!(
        n < 15_000,
        "README.md has {n} characters; reference belongs in docs/"
    );
}

#[test]
fn every_backend_event_is_documented_from_the_code() {
    let guide = read("docs/bring-your-own-backend.md");
    for e in BackendEvent::ALL {
        let row = format!("| `{}` | `{}` |", e.name(), e.log_text());
        assert!(
            guide.contains(&row),
            "docs/bring-your-own-backend.md lacks {row}"
        );
    }
}

#[test]
fn local_links_resolve_and_nothing_points_outside_the_repository() {
    let root = workspace_dir();
    let mut all = Vec::new();
    files(&root, &mut all);
    let link = regex::Regex::new(r"\]\(([^)#:]+)(#[^)]*)?\)").unwrap();
    let outside = regex::Regex::new(r"shared/(DESIGN|STYLE|background|tools)").unwrap();
    let mut bad = Vec::new();
    for f in &all {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        let rel = f.strip_prefix(&root).unwrap().display().to_string();
        if outside.is_match(&text) && !rel.ends_with("docs.rs") {
            bad.push(format!("{rel} cites a file outside the repository"));
        }
        if rel.ends_with(".md") {
            for c in link.captures_iter(&text) {
                let target = f.parent().unwrap().join(&c[1]);
                if !target.exists() {
                    bad.push(format!("{rel}: link to {} does not resolve", &c[1]));
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The statuses of a snapshot's profile, each with `(retried)` where nginx's upstream status
/// shows a second attempt, and the new upstream connections of each step: `200 200(retried)`.
fn cells(snapshot: &str, profile: &str) -> Option<(String, String)> {
    let text = std::fs::read_to_string(snapshot).ok()?;
    let body = text.splitn(3, "---\n").nth(2)?;
    let doc: serde_json::Value = serde_yaml_ng::from_str(body).ok()?;
    let steps = doc["profiles"][profile].as_array()?;
    let statuses = steps.iter().map(|s| {
        let status = s["status"].as_str().unwrap_or("-");
        let retried = s["upstream_status"]
            .as_str()
            .is_some_and(|u| u.contains(','));
        format!("{status}{}", if retried { "(retried)" } else { "" })
    });
    let opened = steps
        .iter()
        .map(|s| s["upstream_connections_opened"].to_string());
    Some((
        statuses.collect::<Vec<_>>().join(" "),
        opened.collect::<Vec<_>>().join(" "),
    ))
}

/// The version table of docs/findings.md, as the snapshots say it.
fn version_table() -> String {
    let dir = workspace_dir().join("snapshots");
    let mut out = String::from(
        "| scenario | config | nginx 1.22 | nginx 1.26 | nginx 1.30 |\n|---|---|---|---|---|\n",
    );
    let rows = [
        ("stock-keepalive-race", "stock"),
        ("file-hop-keepalive-race", "legacy"),
        ("file-hop-keepalive-race", "fixed"),
        ("websocket-headers", "stock"),
        ("websocket-headers", "legacy"),
        ("websocket-headers", "fixed"),
        ("invalid-content-length", "fixed"),
    ];
    for (scenario, profile) in rows {
        let mut line = format!("| {scenario} | {profile} |");
        for v in ["1.22", "1.26", "1.30"] {
            let own = dir.join(format!("{scenario}@nginx-{v}.snap"));
            let file = if v != "1.22" && own.exists() {
                own
            } else {
                dir.join(format!("{scenario}.snap"))
            };
            let (statuses, opened) = cells(file.to_str().unwrap(), profile).unwrap_or_default();
            line.push_str(&format!(" {statuses}; new connections {opened} |"));
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[test]
fn the_version_table_is_the_snapshots() {
    let table = version_table();
    let findings = read("docs/findings.md");
    assert!(
        findings.contains(&table),
        "docs/findings.md should contain, from the snapshots:\n{table}"
    );
}

/// The lines of the first fenced block of `lang` after `heading` in `text`.
fn fenced_block<'a>(text: &'a str, heading: &str, lang: &str) -> Vec<&'a str> {
    let after = &text[text.find(heading).expect("heading")..];
    let start = after.find(&format!("```{lang}\n")).expect("block") + lang.len() + 4;
    let block = &after[start..];
    block[..block.find("```").expect("block end")]
        .lines()
        .collect()
}

/// A scenario file's lines that say what runs: no comments, description, schema line or blank.
fn what_runs(toml: &str) -> Vec<&str> {
    let said = |l: &&str| l.is_empty() || l.starts_with('#') || l.starts_with("description = ");
    toml.lines()
        .map(str::trim_end)
        .filter(|l| !said(l))
        .collect()
}

/// Whether `excerpt` (a profile's key, then lines of it) is in `snapshot`: the key, and after
/// it, within that profile, the other lines one after another.
fn is_excerpt_of(excerpt: &[&str], snapshot: &str) -> Result<(), String> {
    let (key, rest) = excerpt.split_first().ok_or("an empty excerpt")?;
    if rest.is_empty() {
        return Err(format!("only the key {key:?}"));
    }
    let lines: Vec<&str> = snapshot.lines().collect();
    let from = lines
        .iter()
        .position(|l| l == key)
        .ok_or(format!("no {key:?}"))?
        + 1;
    let to = lines[from..]
        .iter()
        .position(|l| l.starts_with("  ") && !l.starts_with("   "))
        .map_or(lines.len(), |n| from + n);
    lines[from..to]
        .windows(rest.len())
        .any(|w| w == rest)
        .then_some(())
        .ok_or(format!(
            "the lines after {key:?} are not one run of lines of it"
        ))
}

#[test]
fn the_readmes_example_is_the_scenario_file_and_its_snapshot() {
    let readme = read("README.md");
    let file = read("scenarios/hop/keepalive-race.toml");
    let toml = fenced_block(&readme, "## One scenario", "toml");
    let shown: Vec<&str> = toml.iter().copied().filter(|l| !l.is_empty()).collect();
    assert_eq!(shown, what_runs(&file), "README's scenario is the file");
    let snapshot = read("snapshots/file-hop-keepalive-race.snap");
    let yaml = fenced_block(&readme, "## One scenario", "yaml");
    is_excerpt_of(&yaml, &snapshot).unwrap_or_else(|e| panic!("README's snapshot: {e}"));
    // The check can fail: lines of two steps taken as one, and another profile's.
    let two_steps = [
        "  legacy:",
        "    - step: webhook valid RE00000000000000000000000000000001",
        "      status: \"502\"",
    ];
    assert!(is_excerpt_of(&two_steps, &snapshot).is_err());
    let other = ["  fixed:", "      status: \"502\""];
    assert!(is_excerpt_of(&other, &snapshot).is_err());
}
