//! The documentation keeps its promises: the README stays short, the bring-your-own-backend
//! guide lists every backend log line the harness reads, every local link resolves, and
//! nothing points outside the repository.

use harness::stack::workspace_dir;
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
