//! A project of one's own: `harness init` in an empty folder, then `harness run` there, with the
//! binaries installed apart from the checkout (the backend found on PATH, nothing read from or
//! written to the checkout).

use crate::support::{browser_present, checkout, tools_present};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The harness and the reference backend copied into two folders of their own, as
/// `cargo install` would put them (the backend on PATH, not beside the harness).
struct Installed {
    _dir: tempfile::TempDir,
    harness: PathBuf,
    path: std::ffi::OsString,
}

fn install() -> Installed {
    let dir = tempfile::tempdir().unwrap();
    let (bin, backend_bin) = (dir.path().join("bin"), dir.path().join("backend-bin"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&backend_bin).unwrap();
    let harness = bin.join("harness");
    std::fs::copy(
        crate::support::bin_exe("harness", env!("CARGO_BIN_EXE_harness")),
        &harness,
    )
    .unwrap();
    let backend = harness::stack::find_backend().unwrap();
    std::fs::copy(backend, backend_bin.join("recordings-backend")).unwrap();
    let path = std::env::join_paths(std::iter::once(backend_bin).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    Installed {
        _dir: dir,
        harness,
        path,
    }
}

impl Installed {
    fn run(&self, cwd: &Path, args: &[&str]) -> Output {
        Command::new(&self.harness)
            .args(args)
            .current_dir(cwd)
            .env("PATH", &self.path)
            .env_remove("HARNESS_BACKEND_BIN")
            .env_remove("HARNESS_PROJECT")
            .env_remove("CI")
            .output()
            .unwrap()
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every file under `dir`, relative to it, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
                files.push(rel);
            }
        }
    }
    files.sort();
    files
}

/// What a snapshot file holds after its header.
fn body(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let rest = text.strip_prefix("---\n").unwrap();
    rest[rest.find("\n---\n").unwrap() + 5..]
        .trim_end()
        .to_string()
}

#[test]
fn init_writes_a_project_and_never_overwrites_a_file() {
    let installed = install();
    let project = tempfile::tempdir().unwrap();
    let out = installed.run(project.path(), &["init"]);
    assert!(out.status.success(), "{}", text(&out));
    let starter = [
        "harness.toml",
        "nginx/nginx.conf",
        "nginx/nginx.hardened.conf",
        "nginx/nginx.legacy.conf",
        "nginx/nginx.stock.conf",
        "scenarios/backend-restart.toml",
        "scenarios/keepalive-race.toml",
        "scenarios/play-keepalive-race.toml",
        "scenarios/scenario.schema.json",
        "scenarios/seed-manual-checks.toml",
        "scenarios/twilio-reset.toml",
        "snapshots/.gitkeep",
    ];
    assert_eq!(tree(project.path()), starter);
    for name in [
        "nginx.conf",
        "nginx.legacy.conf",
        "nginx.stock.conf",
        "nginx.hardened.conf",
    ] {
        assert_eq!(
            std::fs::read(project.path().join("nginx").join(name)).unwrap(),
            std::fs::read(checkout().join("docker").join(name)).unwrap(),
            "{name} is the checkout's"
        );
    }
    let race =
        std::fs::read_to_string(project.path().join("scenarios/keepalive-race.toml")).unwrap();
    assert!(
        race.starts_with("#:schema scenario.schema.json\n"),
        "{race}"
    );

    // Again, with a backend command: what exists is kept (an edit survives), what is missing
    // (a deleted starter file, the stack file) is written.
    let edited = project.path().join("scenarios/seed-manual-checks.toml");
    std::fs::write(&edited, "mine").unwrap();
    std::fs::remove_file(project.path().join("nginx/nginx.stock.conf")).unwrap();
    let again = installed.run(
        project.path(),
        &[
            "init", "--", "python3", "-m", "uvicorn", "app:app", "--fd", "{fd}",
        ],
    );
    let said = text(&again);
    assert!(again.status.success(), "{said}");
    assert!(
        said.contains("kept  scenarios/seed-manual-checks.toml (exists)"),
        "{said}"
    );
    assert!(said.contains("wrote nginx/nginx.stock.conf"), "{said}");
    assert!(said.contains("wrote stack.toml"), "{said}");
    assert_eq!(std::fs::read_to_string(&edited).unwrap(), "mine");
    let mut with_stack: Vec<&str> = starter.to_vec();
    with_stack.push("stack.toml");
    assert_eq!(tree(project.path()), with_stack);
    let stack = harness::backend::StackFile::load(&project.path().join("stack.toml"))
        .unwrap_or_else(|e| panic!("the stack file init writes loads: {e}"));
    assert_eq!(
        stack.name,
        project.path().file_name().unwrap().to_string_lossy()
    );
    let stack_text = std::fs::read_to_string(project.path().join("stack.toml")).unwrap();
    assert!(stack_text.contains("listen = \"fd\""), "{stack_text}");
    assert!(
        stack_text.contains(r#"command = ["python3", "-m", "uvicorn", "app:app", "--fd", "{fd}"]"#),
        "{stack_text}"
    );
}

#[test]
fn a_harness_toml_names_folders_inside_the_root_only() {
    let installed = install();
    let project = tempfile::tempdir().unwrap();
    std::fs::write(
        project.path().join("harness.toml"),
        "scenarios = \"scenarios\"\nsnapshots = \"../elsewhere\"\n",
    )
    .unwrap();
    let out = installed.run(project.path(), &["run"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("harness.toml:2:")
            && said.contains("snapshots: ../elsewhere: must be a folder inside the project root"),
        "{said}"
    );
}

#[test]
fn outside_a_project_the_harness_says_how_to_make_one() {
    let installed = install();
    let empty = tempfile::tempdir().unwrap();
    let out = installed.run(empty.path(), &["run"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no harness.toml in") && text(&out).contains("harness init"),
        "{}",
        text(&out)
    );
    assert_eq!(tree(empty.path()), Vec::<String>::new(), "nothing written");
}

#[test]
fn a_new_project_runs_its_starter_scenarios_and_keeps_its_snapshots_to_itself() {
    if !tools_present() || !browser_present() {
        return;
    }
    let installed = install();
    let project = tempfile::tempdir().unwrap();
    assert!(installed.run(project.path(), &["init"]).status.success());
    let before = tree(&checkout().join("snapshots"));

    // From a folder below the root: the project is found by walking up.
    let first = installed.run(&project.path().join("scenarios"), &["run"]);
    let out = text(&first);
    assert_eq!(
        first.status.code(),
        Some(1),
        "a new snapshot is never accepted: {out}"
    );
    let told: std::collections::BTreeSet<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with("no snapshot yet: wrote "))
        .collect();
    assert_eq!(told.len(), 5, "one per scenario: {out}");
    let snapshots = project.path().join("snapshots");
    let pending: Vec<String> = tree(&snapshots)
        .into_iter()
        .filter(|f| f.ends_with(".snap.new"))
        .collect();
    assert_eq!(pending.len(), 5, "{pending:?}\n{out}");
    // The reference backend behind the copied configs shows what the checkout's snapshots show.
    for file in &pending {
        let name = file.trim_end_matches(".new");
        assert_eq!(
            body(&snapshots.join(file)),
            body(&checkout().join("snapshots").join(name)),
            "{name}"
        );
        std::fs::rename(snapshots.join(file), snapshots.join(name)).unwrap();
    }
    let second = installed.run(project.path(), &["run", "--filter", "seed-manual-checks"]);
    assert!(second.status.success(), "{}", text(&second));
    // Only the project's own snapshot names: other tests of this suite may write a `.snap.new`
    // of their own scenario into the checkout meanwhile (when they fail).
    let stems: Vec<&str> = pending
        .iter()
        .map(|f| f.trim_end_matches(".snap.new"))
        .collect();
    let ours = |files: Vec<String>| -> Vec<String> {
        files
            .into_iter()
            .filter(|f| {
                stems.iter().any(|s| {
                    f.strip_prefix(s)
                        .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('@'))
                })
            })
            .collect()
    };
    assert_eq!(
        ours(tree(&checkout().join("snapshots"))),
        ours(before),
        "nothing written outside the project"
    );
}
